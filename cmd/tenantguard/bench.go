package main

import (
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/internal/ingestbench"
)

func newBenchCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Benchmarks that need real servers"}
	var cfg ingestbench.Config
	var cpuProfile string
	var dedup bool
	ingest := &cobra.Command{
		Use:   "ingest",
		Short: "End-to-end ingest: loadgen -> JetStream -> collector -> ClickHouse, with raw ceilings in the same run",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			cfg.Binary, cfg.Out = bin, a.stderr
			cfg.CollectorEnv = append(cfg.CollectorEnv, "TENANTGUARD_COLLECTOR_DEDUP_HORIZON="+strconv.FormatBool(dedup))
			stopProfile, err := startCPUProfile(cpuProfile)
			if err != nil {
				return err
			}
			defer stopProfile()
			res, err := ingestbench.Run(ctx, cfg)
			if err != nil {
				return err
			}
			res.Print(a.stdout)
			return nil
		},
	}
	ingest.Flags().IntVar(&cfg.Events, "events", 1_000_000, "events through the pipeline")
	ingest.Flags().IntVar(&cfg.Tenants, "tenants", 10_000, "distinct tenants")
	ingest.Flags().IntVar(&cfg.RawN, "raw", 0, "messages/rows for each raw ceiling (default = --events)")
	ingest.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the load generator and embedded NATS to this file")
	ingest.Flags().BoolVar(&dedup, "dedup-horizon", true, "run the collector with collector.dedup_horizon on or off, to measure its cost")
	ingest.Flags().IntVar(&cfg.EmitBatch, "emit-batch", 1000, "events per fast batch of the load generator's emitter when the stream allows them; -1 publishes async only")
	ingest.Flags().StringVar(&cfg.CollectorProfile, "collector-cpuprofile", "", "write a CPU profile of the collector process to this file")
	cmd.AddCommand(ingest)
	return cmd
}
