package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/collector/store"
)

func newMigrateCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply the ClickHouse schema (idempotent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			st, err := store.Open(ctx, a.cfg.ClickHouse)
			if err != nil {
				return err
			}
			defer st.Close()
			steps, err := st.Migrate(ctx)
			for _, s := range steps {
				fmt.Fprintf(a.stdout, "%3d  %-12s applied %s\n", s.Version, s.Name, s.AppliedAt.Format(time.RFC3339))
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "schema of database %s is up to date (%d migrations)\n", st.Database(), len(steps))
			return nil
		},
	}
}
