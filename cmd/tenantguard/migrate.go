package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/partition"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/daemon"
)

func newMigrateCmd(a *app) *cobra.Command {
	withCH, withNATS := true, true
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply the ClickHouse schema and create or update the NATS streams and buckets (idempotent)",
		Long: "migrate applies the ClickHouse schema, then creates or updates the JetStream streams\n" +
			"TENANTGUARD_USAGE, TENANTGUARD_DLQ, TENANTGUARD_CORRECTIONS and the bucket tenantguard_partitions\n" +
			"(collector.stream.replicas), and the buckets tenantguard_decisions and tenantguard_limiters\n" +
			"(decisions.replicas), as `run` does at start. Only run and migrate create or change them. A\n" +
			"replica count is never lowered: a stream or bucket with more replicas than configured keeps\n" +
			"them, with a warning.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !withCH && !withNATS {
				return usageErr(errors.New("--clickhouse=false and --nats=false leave nothing to do"))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			if withCH {
				if err := a.migrateClickHouse(ctx); err != nil {
					return err
				}
			}
			if withNATS {
				return a.migrateNATS(ctx)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&withCH, "clickhouse", true, "apply the ClickHouse schema")
	cmd.Flags().BoolVar(&withNATS, "nats", true, "create or update the NATS streams and buckets")
	return cmd
}

func (a *app) migrateClickHouse(ctx context.Context) error {
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
}

// migrateNATS provisions the streams and buckets and prints each with its
// replica count.
func (a *app) migrateNATS(ctx context.Context) error {
	nc, err := a.connectNATS("migrate", nats.RetryOnFailedConnect(false), nats.Timeout(daemon.CLINATSTimeout/2))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	kept, err := daemon.ProvisionNATS(ctx, js, a.cfg)
	for _, k := range kept {
		fmt.Fprintln(a.stderr, "tenantguard: warning:", k.String())
	}
	if err != nil {
		return err
	}
	for _, n := range []string{event.UsageStream, event.DLQStream, event.CorrectionsStream,
		"KV_" + partition.Bucket, "KV_" + event.DecisionsBucket, "KV_" + event.LimitersBucket} {
		s, err := js.Stream(ctx, n)
		if err != nil {
			return fmt.Errorf("stream %s: %w", n, err)
		}
		fmt.Fprintf(a.stdout, "%-26s replicas %d\n", n, s.CachedInfo().Config.Replicas)
	}
	fmt.Fprintln(a.stdout, "NATS streams and buckets are up to date")
	return nil
}
