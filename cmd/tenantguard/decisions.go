package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/anomaly/decide"
	"github.com/tenantguard/tenantguard/limiter"
)

func newDecisionsCmd(a *app) *cobra.Command {
	var (
		format string
		all    bool
	)
	cmd := &cobra.Command{
		Use:   "decisions [--format text|json]",
		Short: "List the live decisions in the tenantguard_decisions bucket, with whether each verifies",
		Long: "decisions lists the live decisions in the tenantguard_decisions bucket. SIGNATURE is ok for a\n" +
			"decision signed by decisions.signing_key_file's key or one of decisions.trusted_keys, else why\n" +
			"limiters ignore it (unsigned, bad_signature, unknown_key, invalid, malformed, expiry_too_far).\n" +
			"Control characters in any field are printed escaped.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" {
				return usageErr(fmt.Errorf("--format %q must be text or json", format))
			}
			var entries []limiter.Entry
			err := a.withPublisher(cmd.Context(), false, func(ctx context.Context, pub *limiter.Publisher) (err error) {
				entries, err = pub.Entries(ctx, all)
				return err
			})
			if err != nil {
				return err
			}
			ds := decide.List(entries, all)
			if format == "json" {
				return decide.WriteJSON(a.stdout, ds)
			}
			return decide.WriteText(a.stdout, ds, time.Now())
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	cmd.Flags().BoolVar(&all, "all", false, "include expired decisions and clears still in the bucket")
	return cmd
}
