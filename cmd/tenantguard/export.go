package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/exporter/billing"
	"github.com/tenantguard/tenantguard/internal/progress"
)

// newExportCmd is `tenantguard export billing|events`.
func newExportCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Export billing lines, or one tenant's raw events, from ClickHouse",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newExportBillingCmd(a), newExportEventsCmd(a))
	return cmd
}

// exportFlags are shared by both exports.
type exportFlags struct {
	from, to, tenant, format, output string
	noProgress                       bool
}

func (f *exportFlags) register(cmd *cobra.Command, defFormat, formats string) {
	cmd.Flags().StringVar(&f.from, "from", "", "start of the range, inclusive: RFC 3339 or YYYY-MM-DD (UTC midnight)")
	cmd.Flags().StringVar(&f.to, "to", "", "end of the range, exclusive: RFC 3339 or YYYY-MM-DD (UTC midnight)")
	cmd.Flags().StringVar(&f.format, "format", defFormat, "output format: "+formats)
	cmd.Flags().StringVarP(&f.output, "output", "o", "-", "output file; - is stdout. A file appears only when the export completed")
	cmd.Flags().BoolVar(&f.noProgress, "no-progress", false, "do not report progress on stderr")
	_ = cmd.MarkFlagRequired("from")
	_ = cmd.MarkFlagRequired("to")
}

func (f *exportFlags) times() (from, to time.Time, err error) {
	if from, err = parseWhen("--from", f.from); err != nil {
		return
	}
	if to, err = parseWhen("--to", f.to); err != nil {
		return
	}
	if !to.After(from) {
		err = errors.New("--to must be after --from")
	}
	return
}

func parseWhen(flag, s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%s: %q is neither RFC 3339 (2026-11-01T00:00:00Z) nor a date (2026-11-01)", flag, s)
}

func usageErr(err error) error { return &exitError{code: 2, err: err} }

func newExportBillingCmd(a *app) *cobra.Command {
	var f exportFlags
	var noRecord bool
	var adjustFrom string
	cmd := &cobra.Command{
		Use:   "billing --from T --to T [--tenant T] [--format csv|json] [-o FILE] [--no-record] [--adjust-from ID]",
		Short: "Billing lines per tenant, kind and unit price, plus a total per tenant (docs/billing.md)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			from, to, err := f.times()
			if err != nil {
				return usageErr(err)
			}
			req := billing.Request{From: from, To: to, Tenant: f.tenant, Format: billing.Format(f.format),
				NoRecord: noRecord, AdjustFrom: adjustFrom}
			if err := req.Validate(); err != nil {
				return usageErr(err)
			}
			return a.runExport(cmd.Context(), &f, "lines", func(ctx context.Context, x *billing.Exporter, w io.Writer, progress func(int64)) (string, error) {
				req.Progress = progress
				sum, err := x.Billing(ctx, w, req)
				msg := fmt.Sprintf("%d lines, %d tenants, %d events, total %s %s",
					sum.Lines, sum.Tenants, sum.Events, sum.Total.StringFixed(9), x.Currency())
				if sum.Adjusted > 0 {
					msg += fmt.Sprintf("; %d tenants adjusted by %s %s against earlier exports", sum.Adjusted, sum.Adjustment.StringFixed(9), x.Currency())
				}
				if sum.ExportID != "" {
					msg += "; recorded as " + sum.ExportID
				}
				if sum.NonFinite > 0 {
					msg += fmt.Sprintf("; warning: %d lines have a stored quantity that is not finite (left empty; amounts are exact)", sum.NonFinite)
				}
				return msg, err
			})
		},
	}
	f.register(cmd, "csv", "csv or json (NDJSON)")
	cmd.Flags().StringVar(&f.tenant, "tenant", "", "only this tenant")
	cmd.Flags().BoolVar(&noRecord, "no-record", false, "a preview: do not record this export of a closed period in billing_exports")
	cmd.Flags().StringVar(&adjustFrom, "adjust-from", "", "adjust against this earlier export of the period (default: the latest that billed each tenant)")
	return cmd
}

func newExportEventsCmd(a *app) *cobra.Command {
	var f exportFlags
	cmd := &cobra.Command{
		Use:   "events --tenant T --from T --to T [--format ndjson|csv] [-o FILE]",
		Short: "One tenant's raw events (data portability): NDJSON in wire format v1, or CSV",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			from, to, err := f.times()
			if err != nil {
				return usageErr(err)
			}
			req := billing.EventsRequest{Tenant: f.tenant, From: from, To: to, Format: billing.Format(f.format)}
			if err := req.Validate(); err != nil {
				return usageErr(err)
			}
			return a.runExport(cmd.Context(), &f, "events", func(ctx context.Context, x *billing.Exporter, w io.Writer, progress func(int64)) (string, error) {
				req.Progress = progress
				n, err := x.Events(ctx, w, req)
				return fmt.Sprintf("%d events of tenant %s", n, req.Tenant), err
			})
		},
	}
	f.register(cmd, "ndjson", "ndjson or csv")
	cmd.Flags().StringVar(&f.tenant, "tenant", "", "the tenant (required)")
	_ = cmd.MarkFlagRequired("tenant")
	return cmd
}

type exportFunc func(ctx context.Context, x *billing.Exporter, w io.Writer, progress func(int64)) (summary string, err error)

// runExport opens ClickHouse, writes the export to stdout or to a temporary
// file renamed into place on success, and reports progress on stderr.
func (a *app) runExport(ctx context.Context, f *exportFlags, unit string, run exportFunc) error {
	st, err := store.Open(ctx, a.cfg.ClickHouse)
	if err != nil {
		return err
	}
	defer st.Close()
	bcfg := billing.DefaultConfig()
	bcfg.Currency = a.cfg.Pricing.Currency
	x, err := billing.New(bcfg, st)
	if err != nil {
		return err
	}

	out, err := billing.NewOutput(f.output, a.stdout)
	if err != nil {
		return err
	}
	defer out.Close()
	var rows atomic.Int64
	start := time.Now()
	p := progress.Start(a.stderr, !f.noProgress, 0, func() string {
		return fmt.Sprintf("exporting: %d %s, %s, %s", rows.Load(), unit, progress.Bytes(out.Bytes()), time.Since(start).Round(100*time.Millisecond))
	})
	summary, err := run(ctx, x, out, rows.Store)
	p.Stop()
	if err != nil {
		return err
	}
	if err := out.Commit(); err != nil {
		return err
	}
	if !f.noProgress {
		fmt.Fprintf(a.stderr, "exported %s (%s) in %s\n", summary, progress.Bytes(out.Bytes()), time.Since(start).Round(time.Millisecond))
	}
	return nil
}
