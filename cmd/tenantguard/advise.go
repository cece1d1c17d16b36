package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/anomaly/advisor"
	"github.com/tenantguard/tenantguard/collector/store"
)

// newAdviseCmd is `tenantguard advise`: the heavy-tenant report. Exit 0
// when no tenant is heavy, 1 when one is, 2 on a usage or runtime error.
func newAdviseCmd(a *app) *cobra.Command {
	var (
		from, to, format string
		timeout          time.Duration
	)
	cmd := &cobra.Command{
		Use:   "advise [--from T --to T] [--format text|json]",
		Short: "Each tenant's share of the pooled resources, and who should move to dedicated (exit 1 when a tenant is heavy)",
		Long: "advise reads usage_1m and events in ClickHouse and reports, per tenant, its share of events, cost,\n" +
			"db_query time and compute seconds, hour by hour, with a recommendation: move_to_dedicated when it\n" +
			"is over advisor.share in at least advisor.sustained of the hours, watch when over in at least\n" +
			"advisor.watch of them or trending up. Without --from and --to it judges the last advisor.window of\n" +
			"complete hours; a range is widened to whole hours. The text table lists the tenants with a\n" +
			"recommendation; the JSON (docs/advisor.md) lists every tenant. Exit status: 0 no tenant heavy,\n" +
			"1 a tenant heavy, 2 error.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" {
				return usageErr(fmt.Errorf("--format %q must be text or json", format))
			}
			cfg := a.cfg.Advisor.Config
			start, end := cfg.LastWindow(time.Now())
			switch {
			case from != "" && to != "":
				f := exportFlags{from: from, to: to}
				var err error
				if start, end, err = f.times(); err != nil {
					return usageErr(err)
				}
			case from != "" || to != "":
				return usageErr(errors.New("give both --from and --to, or neither for the last advisor.window"))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			st, err := store.Open(ctx, a.cfg.ClickHouse)
			if err != nil {
				return usageErr(err)
			}
			defer st.Close()
			adv, err := advisor.New(cfg, advisor.Deps{Source: st, Logger: a.log})
			if err != nil {
				return usageErr(err)
			}
			rep, err := adv.Report(ctx, start, end)
			if err != nil {
				return usageErr(err)
			}
			if format == "json" {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				err = enc.Encode(rep)
			} else {
				err = advisor.WriteText(a.stdout, rep)
			}
			if err != nil {
				return usageErr(err)
			}
			if rep.Heavy > 0 {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "start of the range, inclusive: RFC 3339 or YYYY-MM-DD (UTC midnight)")
	cmd.Flags().StringVar(&to, "to", "", "end of the range, exclusive: RFC 3339 or YYYY-MM-DD (UTC midnight)")
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up after this long")
	return cmd
}
