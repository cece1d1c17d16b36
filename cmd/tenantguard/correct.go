package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/user"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/collector/correct"
	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/event"
)

type correctFlags struct {
	tenant, reason, by, file, format string
	eventTime                        string
	void, force, direct, daemon      bool
	id                               string
	quantity                         float64
	timeout                          time.Duration
}

func newCorrectCmd(a *app) *cobra.Command {
	var f correctFlags
	cmd := &cobra.Command{
		Use:   "correct --tenant T (--void | --quantity Q) --reason R [--by B] (EVENT_ID | --file F)",
		Short: "Void or amend stored events (the originals stay for audit; billing, rollups and spend net them out)",
		Long: "Void or amend stored events of one tenant: one event id (the argument, or --id), or a file of\n" +
			"ids (one per line; blank lines and # comments skipped; - is stdin). When a daemon consumes\n" +
			"TENANTGUARD_CORRECTIONS, the corrections go to it over NATS: it applies them one at a time and\n" +
			"updates its metrics and spend tracking. Otherwise they are applied through ClickHouse from here,\n" +
			"by the same rules. --daemon insists on the daemon, --direct on ClickHouse.\n" +
			"Exit status: 0 every correction applied (or was already), 1 any refused, 2 usage or runtime error.",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cs, err := f.corrections(cmd, args, cmd.InOrStdin())
			if err != nil {
				return usageErr(err)
			}
			if f.direct && f.daemon {
				return usageErr(errors.New("give at most one of --direct and --daemon"))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
			defer cancel()
			var results []event.CorrectionResult
			switch {
			case f.direct:
				results, err = correct.ApplyStore(ctx, a.cfg.ClickHouse, a.cfg.Collector.Lateness, f.tenant, cs)
			case f.daemon || a.daemonConsumes(ctx):
				results, err = a.correctViaNATS(ctx, cs)
			default:
				fmt.Fprintln(a.stderr, "no daemon consumes "+event.CorrectionsStream+": applying through ClickHouse from here")
				results, err = correct.ApplyStore(ctx, a.cfg.ClickHouse, a.cfg.Collector.Lateness, f.tenant, cs)
			}
			if err != nil {
				return err
			}
			return a.reportCorrections(results, f.format)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.tenant, "tenant", "", "the tenant whose events are corrected (required)")
	fl.BoolVar(&f.void, "void", false, "void the events")
	fl.Float64Var(&f.quantity, "quantity", 0, "amend the events to this quantity")
	fl.StringVar(&f.reason, "reason", "", "why (required; kept for audit)")
	fl.StringVar(&f.by, "by", "", "who makes the correction (default: the OS user name)")
	fl.StringVar(&f.file, "file", "", "a file of event ids, one per line (- is stdin)")
	fl.StringVar(&f.eventTime, "event-time", "", "the events' time, RFC 3339, to look them up in one second")
	fl.BoolVar(&f.force, "force", false, "correct events older than collector.lateness, whose period may be billed")
	fl.StringVar(&f.id, "id", "", "the event id to correct (instead of the argument)")
	fl.BoolVar(&f.direct, "direct", false, "apply through ClickHouse from this process, even when a daemon runs")
	fl.BoolVar(&f.daemon, "daemon", false, "send to the daemon only, and wait for it up to --timeout")
	fl.StringVar(&f.format, "format", "text", "output: text or json (NDJSON, one result per line)")
	fl.DurationVar(&f.timeout, "timeout", time.Minute, "how long to wait for the outcome")
	return cmd
}

// corrections builds the corrections the flags and arguments ask for.
func (f *correctFlags) corrections(cmd *cobra.Command, args []string, stdin io.Reader) ([]event.Correction, error) {
	amend := cmd.Flags().Changed("quantity")
	if f.id != "" {
		if len(args) > 0 {
			return nil, errors.New("give the event id as the argument or as --id, not both")
		}
		args = []string{f.id}
	}
	switch {
	case !event.ValidTenantID(f.tenant):
		return nil, fmt.Errorf("--tenant %q must match %s", f.tenant, event.TenantPattern)
	case f.void == amend:
		return nil, errors.New("give exactly one of --void and --quantity")
	case f.reason == "":
		return nil, errors.New("--reason is required")
	case (len(args) == 1) == (f.file != ""):
		return nil, errors.New("give one event id, or --file with ids")
	case f.format != "text" && f.format != "json":
		return nil, fmt.Errorf("--format %q must be text or json", f.format)
	case f.timeout <= 0:
		return nil, errors.New("--timeout must be > 0")
	}
	if f.by == "" {
		f.by = "cli"
		if u, err := user.Current(); err == nil && u.Username != "" {
			f.by = u.Username
		}
	}
	var at time.Time
	if f.eventTime != "" {
		t, err := time.Parse(time.RFC3339Nano, f.eventTime)
		if err != nil {
			return nil, fmt.Errorf("--event-time %q is not RFC 3339", f.eventTime)
		}
		at = t.UTC()
	}
	ids := args
	if f.file != "" {
		var err error
		if ids, err = correct.ReadIDs(f.file, stdin); err != nil {
			return nil, err
		}
	}
	tmpl := event.Correction{TenantID: f.tenant, EventTime: at, Action: event.ActionVoid, Reason: f.reason, By: f.by, Force: f.force}
	if amend {
		q := f.quantity
		tmpl.Action, tmpl.Quantity = event.ActionAmend, &q
	}
	return correct.ForEvents(tmpl, ids)
}

// daemonConsumes reports whether a daemon consumes correction requests
// now (see correct.DaemonConsumes).
func (a *app) daemonConsumes(ctx context.Context) bool {
	nc, err := a.connectNATS("cli")
	if err != nil {
		return false
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return false
	}
	return correct.DaemonConsumes(ctx, js)
}

// correctViaNATS sends the corrections to the daemon and waits for them.
func (a *app) correctViaNATS(ctx context.Context, cs []event.Correction) ([]event.CorrectionResult, error) {
	nc, err := a.connectNATS("cli")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	res, err := emit.Correct(ctx, js, cs...)
	if errors.Is(err, emit.ErrNotConfirmed) {
		return nil, fmt.Errorf("%w; is `tenantguard run` up? (without --daemon, the CLI applies directly when no daemon consumes)", err)
	}
	return res, err
}

// reportCorrections prints one line per result and a summary; it returns
// an exit-1 error when any correction was refused.
func (a *app) reportCorrections(results []event.CorrectionResult, format string) error {
	counts := map[string]int{}
	enc := json.NewEncoder(a.stdout)
	for _, r := range results {
		counts[r.Status]++
		if format == "json" {
			if err := enc.Encode(r); err != nil {
				return err
			}
			continue
		}
		line := fmt.Sprintf("%s\t%s", r.EventID, r.Status)
		if r.Status == event.CorrectionRefused {
			line += "\t" + r.Error
		}
		fmt.Fprintln(a.stdout, line)
	}
	fmt.Fprintf(a.stderr, "%d corrections: %d applied, %d duplicates, %d refused\n", len(results),
		counts[event.CorrectionApplied], counts[event.CorrectionDuplicate], counts[event.CorrectionRefused])
	if n := counts[event.CorrectionRefused]; n > 0 {
		return findings(fmt.Errorf("%d of %d corrections refused; nothing was changed by them", n, len(results)))
	}
	return nil
}
