package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/anomaly/decide"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/limiter"
)

// publisher connects to NATS and returns a decisions publisher. It gives
// up within cliNATSTimeout when no server answers, unlike the daemon.
func (a *app) publisher(ctx context.Context) (*limiter.Publisher, func(), error) {
	octx, cancel := context.WithTimeout(ctx, cliNATSTimeout)
	defer cancel()
	nc, err := a.connectNATS("cli", nats.RetryOnFailedConnect(false), nats.Timeout(cliNATSTimeout/2))
	if err != nil {
		return nil, nil, err
	}
	pub, err := limiter.NewPublisher(octx, nc, 0)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("decisions bucket (is JetStream enabled at %s?): %w", redact(a.cfg.NATS.URL), err)
	}
	return pub, nc.Close, nil
}

// cliNATSTimeout bounds how long a CLI command waits for NATS.
const cliNATSTimeout = 4 * time.Second

// auditManual records a manual decision in ClickHouse, best effort: the
// decision is already in force, so a missing ClickHouse only warns.
func (a *app) auditManual(ctx context.Context, d limiter.Decision) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := store.Open(ctx, a.cfg.ClickHouse)
	if err == nil {
		defer st.Close()
		var rec *decide.ClickHouseRecorder
		if rec, err = decide.NewClickHouseRecorder(st.Conn(), st.Database()); err == nil {
			err = rec.Record(ctx, []limiter.Decision{d})
		}
	}
	if err != nil {
		fmt.Fprintf(a.stderr, "warning: decision not recorded in the ClickHouse audit trail: %s\n", redact(err.Error()))
	}
}

func newThrottleCmd(a *app) *cobra.Command {
	var (
		tenant, scope, reason string
		ratePerSec            float64
		burst                 uint32
		ttl                   time.Duration
		noAudit               bool
	)
	cmd := &cobra.Command{
		Use:   "throttle --tenant T --rate N [--burst B] [--for D] [--reason R]",
		Short: "Throttle a tenant cluster-wide (a manual decision; outranks automatic ones until it expires)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("rate") {
				return usageErr(errors.New("--rate is required"))
			}
			if !event.ValidTenantID(tenant) {
				return usageErr(fmt.Errorf("--tenant %q must match %s", tenant, event.TenantPattern))
			}
			if ttl <= 0 {
				return usageErr(errors.New("--for must be > 0"))
			}
			if math.IsNaN(ratePerSec) || math.IsInf(ratePerSec, 0) || ratePerSec < 0 {
				return usageErr(errors.New("--rate must be a finite number >= 0"))
			}
			now := time.Now().UTC().Truncate(time.Second)
			d := limiter.Decision{TenantID: tenant, Scope: scope, Action: limiter.ActionThrottle,
				RatePerSec: ratePerSec, Burst: burst, IssuedAt: now, ExpiresAt: now.Add(ttl),
				Reason: reason, Source: limiter.SourceManual}
			if ratePerSec == 0 {
				d.Action = limiter.ActionShed
			}
			if err := d.Validate(); err != nil {
				return usageErr(err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
			defer cancel()
			pub, closeNC, err := a.publisher(ctx)
			if err != nil {
				return err
			}
			defer closeNC()
			if _, err := pub.Put(ctx, d); err != nil {
				return err
			}
			if !noAudit {
				a.auditManual(ctx, d)
			}
			fmt.Fprintf(a.stdout, "%s %s (%s): %g/s, burst %d, until %s\n", d.Action, tenant, scope,
				ratePerSec, d.EffectiveBurst(), d.ExpiresAt.Format(time.RFC3339))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&tenant, "tenant", "", "tenant id (required)")
	f.Float64Var(&ratePerSec, "rate", 0, "cluster-wide requests per second (required; 0 sheds the tenant)")
	f.Uint32Var(&burst, "burst", 0, "cluster-wide burst (default max(1, ceil(rate)))")
	f.DurationVar(&ttl, "for", time.Hour, "how long the decision lasts")
	f.StringVar(&reason, "reason", "manual throttle", "why, for the audit trail")
	f.StringVar(&scope, "scope", limiter.ScopeAll, "all, route:<route> or integration:<name>")
	f.BoolVar(&noAudit, "no-audit", false, "do not record the decision in ClickHouse")
	_ = cmd.MarkFlagRequired("tenant")
	return cmd
}

func newReleaseCmd(a *app) *cobra.Command {
	var (
		tenant, scope string
		noAudit       bool
	)
	cmd := &cobra.Command{
		Use:   "release --tenant T",
		Short: "Clear a tenant's decision (manual or automatic) for a scope",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := limiter.Key(tenant, scope); err != nil {
				return usageErr(err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
			defer cancel()
			pub, closeNC, err := a.publisher(ctx)
			if err != nil {
				return err
			}
			defer closeNC()
			if err := pub.Clear(ctx, tenant, scope, limiter.SourceManual); err != nil {
				return err
			}
			if !noAudit {
				now := time.Now().UTC().Truncate(time.Second)
				a.auditManual(ctx, limiter.Decision{TenantID: tenant, Scope: scope, Action: limiter.ActionClear,
					IssuedAt: now, ExpiresAt: now.Add(time.Second), Reason: "manual release", Source: limiter.SourceManual})
			}
			fmt.Fprintf(a.stdout, "released %s (%s)\n", tenant, scope)
			return nil
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant id (required)")
	cmd.Flags().StringVar(&scope, "scope", limiter.ScopeAll, "all, route:<route> or integration:<name>")
	cmd.Flags().BoolVar(&noAudit, "no-audit", false, "do not record the release in ClickHouse")
	_ = cmd.MarkFlagRequired("tenant")
	return cmd
}

func newDecisionsCmd(a *app) *cobra.Command {
	var (
		format string
		all    bool
	)
	cmd := &cobra.Command{
		Use:   "decisions [--format text|json]",
		Short: "List the live decisions in the tenantguard_decisions bucket",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" {
				return usageErr(fmt.Errorf("--format %q must be text or json", format))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
			defer cancel()
			pub, closeNC, err := a.publisher(ctx)
			if err != nil {
				return err
			}
			defer closeNC()
			ds, err := pub.List(ctx, all)
			if err != nil {
				return err
			}
			if format == "json" {
				if ds == nil {
					ds = []limiter.Decision{}
				}
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(ds)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TENANT\tSCOPE\tACTION\tRATE/S\tBURST\tSOURCE\tEXPIRES IN\tREASON")
			now := time.Now()
			for _, d := range ds {
				left := time.Until(d.ExpiresAt).Round(time.Second).String()
				if !d.Live(now) {
					left = "expired"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%g\t%d\t%s\t%s\t%s\n", d.TenantID, d.Scope, d.Action,
					d.RatePerSec, d.EffectiveBurst(), d.Source, left, d.Reason)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(ds) == 0 {
				fmt.Fprintln(a.stdout, "no live decisions")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	cmd.Flags().BoolVar(&all, "all", false, "include expired decisions still in the bucket")
	return cmd
}
