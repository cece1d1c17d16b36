package main

import (
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

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
			if cfg.CollectorProfile != "" {
				// The collector runs in the bench's scratch directory.
				if cfg.CollectorProfile, err = filepath.Abs(cfg.CollectorProfile); err != nil {
					return err
				}
			}
			cfg.CollectorEnv = append(cfg.CollectorEnv, "TENANTGUARD_COLLECTOR_DEDUP_HORIZON="+strconv.FormatBool(dedup))
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				cfg.CPUProfile = f
			}
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
	ingest.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the load generator and embedded NATS during the throughput phase to this file")
	ingest.Flags().BoolVar(&dedup, "dedup-horizon", true, "run the collector with collector.dedup_horizon on or off, to measure its cost")
	ingest.Flags().IntVar(&cfg.EmitBatch, "emit-batch", 1000, "events per fast batch of the load generator's emitter when the stream allows them; -1 publishes async only")
	ingest.Flags().StringArrayVar(&cfg.CollectorEnv, "collector-env", nil, "KEY=VALUE added to the collector's environment, e.g. TENANTGUARD_COLLECTOR_BATCH_MIN_WAIT=200ms (repeatable)")
	ingest.Flags().StringVar(&cfg.CollectorProfile, "collector-cpuprofile", "", "write a CPU profile of the collector process to this file")
	cmd.AddCommand(ingest, newBenchFloodCmd(a))
	return cmd
}

func newBenchFloodCmd(a *app) *cobra.Command {
	var cfg ingestbench.FloodConfig
	flood := &cobra.Command{
		Use:   "flood",
		Short: "Fairness under a flood: other tenants' publish->queryable p99 without and then with one tenant at 10x capacity; exits 1 if a target is missed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			cfg.Binary, cfg.Out = bin, a.stderr
			res, err := ingestbench.RunFlood(ctx, cfg)
			if err != nil {
				return err
			}
			res.Print(a.stdout)
			if err := res.Check(); err != nil {
				return findings(err)
			}
			return nil
		},
	}
	f := flood.Flags()
	f.IntVar(&cfg.Tenants, "tenants", 1000, "tenants publishing normally")
	f.Float64Var(&cfg.Capacity, "capacity", 0, "the pipeline's sustained events/s; 0 measures it first")
	f.IntVar(&cfg.Calibrate, "calibrate", 200_000, "events of the unpaced run that measures capacity")
	f.DurationVar(&cfg.Phase, "phase", 20*time.Second, "how long each phase publishes")
	f.Float64Var(&cfg.Factor, "factor", 10, "the flooding tenant's offered rate, as a multiple of capacity")
	f.Float64Var(&cfg.Load, "load", 0.5, "the other tenants' rate, as a share of capacity")
	f.Float64Var(&cfg.TenantRate, "tenant-rate", 0, "the emitter's per-tenant rate (emit.Config.TenantRate); 0 means capacity/4, -1 none")
	f.IntVar(&cfg.ProbeEvery, "probe-every", 100, "one normal event in this many is a latency probe")
	f.IntVar(&cfg.EmitBatch, "emit-batch", 1000, "events per fast batch of the emitter when the stream allows them; -1 publishes async only")
	return flood
}
