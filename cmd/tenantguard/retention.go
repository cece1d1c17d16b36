package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
)

func newDeleteTenantCmd(a *app) *cobra.Command {
	var tenant string
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete-tenant --tenant T --yes",
		Short: "Delete every stored event and rollup of one tenant (a ClickHouse mutation)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !event.ValidTenantID(tenant) {
				return &exitError{code: 2, err: fmt.Errorf("--tenant %q is not a valid tenant id", tenant)}
			}
			if !yes {
				return &exitError{code: 2, err: errors.New("this deletes data for good: add --yes to confirm")}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			st, err := store.Open(ctx, a.cfg.ClickHouse)
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.DeleteTenant(ctx, tenant); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "deletion of tenant %s submitted; ClickHouse applies it in the background (see system.mutations)\n", tenant)
			return nil
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant id")
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm the deletion")
	return cmd
}
