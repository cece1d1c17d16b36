package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/loadgen"
	"github.com/tenantguard/tenantguard/internal/daemon"
	"github.com/tenantguard/tenantguard/internal/provision"
)

func newLoadgenCmd(a *app) *cobra.Command {
	lc := loadgen.DefaultConfig()
	var overflow string
	cmd := &cobra.Command{
		Use:   "loadgen",
		Short: "Send synthetic multi-tenant traffic, optionally with one noisy tenant",
		Example: "  tenantguard loadgen --tenants 100 --rate 2000 --duration 5m --noisy acme --noisy-factor 5\n" +
			"  tenantguard loadgen --tenants 10000 --count 1000000 --rate 0",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			gen, nc, em, err := daemon.Traffic(ctx, a.cfg, a.log, lc, "loadgen", overflow)
			if errors.Is(err, provision.ErrMissing) {
				return findings(err) // loadgen never creates the stream: exit 1
			}
			if err != nil {
				return err
			}
			defer nc.Close()
			final, err := gen.Run(ctx, em, func(p loadgen.Progress) { printProgress(a, em, p, false) })
			cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cerr := em.Close(cctx)
			printProgress(a, em, final, true)
			if err != nil {
				return err
			}
			return cerr
		},
	}
	f := cmd.Flags()
	f.IntVar(&lc.Tenants, "tenants", lc.Tenants, "number of tenants")
	f.Float64Var(&lc.Rate, "rate", lc.Rate, "total events/s outside spikes (0 = as fast as possible)")
	f.IntVar(&lc.Count, "count", lc.Count, "stop after this many events (0 = no limit)")
	f.DurationVar(&lc.Duration, "duration", lc.Duration, "stop after this long (0 = until interrupted)")
	f.Uint64Var(&lc.Seed, "seed", lc.Seed, "random seed")
	f.Float64Var(&lc.ErrorRate, "error-rate", lc.ErrorRate, "share of failing requests")
	f.DurationVar(&lc.DayLength, "day-length", lc.DayLength, "compress a daily cycle into this long (0 = flat)")
	f.StringVar(&lc.Noisy, "noisy", lc.Noisy, "id of a noisy tenant (empty = none)")
	f.Float64Var(&lc.NoisyFactor, "noisy-factor", lc.NoisyFactor, "rate multiplier of the noisy tenant during its spike")
	f.DurationVar(&lc.SpikeAfter, "spike-after", lc.SpikeAfter, "when the spike starts")
	f.DurationVar(&lc.SpikeFor, "spike-for", lc.SpikeFor, "how long the spike lasts")
	f.StringVar(&lc.TenantPrefix, "tenant-prefix", lc.TenantPrefix, "tenant id prefix")
	f.StringVar(&overflow, "overflow", emit.Block, "when the emitter buffer is full: block or drop")
	return cmd
}

func printProgress(a *app, em *emit.Emitter, p loadgen.Progress, final bool) {
	s := em.Stats()
	spike := ""
	if p.Spiking {
		spike = "  [noisy tenant spiking]"
	}
	line := fmt.Sprintf("\rsent %d  %.0f ev/s  confirmed %d  buffered %d  dropped %d  retries %d  %s%s   ",
		p.Sent, p.Rate, s.Published, s.Buffered, s.Dropped, s.Retries, p.Elapsed.Truncate(time.Second), spike)
	if final {
		line += "\n"
		if s.LastError != "" {
			line += "last publish error: " + s.LastError + "\n"
		}
	}
	fmt.Fprint(a.stderr, line)
}
