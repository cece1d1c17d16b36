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
	"golang.org/x/sync/errgroup"

	"github.com/tenantguard/tenantguard/collector/loadgen"
	"github.com/tenantguard/tenantguard/internal/daemon"
	"github.com/tenantguard/tenantguard/internal/devstack"
)

func newDevCmd(a *app) *cobra.Command {
	var withDemo bool
	var dataDir string
	lc := loadgen.DefaultConfig()
	lc.Tenants, lc.Rate, lc.Noisy = 30, 300, "noisy-co"
	lc.SpikeAfter, lc.SpikeFor = 5*time.Minute, 4*time.Minute
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole stack on this machine: embedded NATS, a managed clickhouse-server, the daemon",
		Long: "dev starts an embedded NATS server with JetStream and a clickhouse-server child process on free\n" +
			"ports, keeps their data under ./.tenantguard/, and runs the daemon against them. With --demo it\n" +
			"also sends synthetic traffic from several tenants, one of them noisy, and shows a live table.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runDev(ctx, a, dataDir, withDemo, lc)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&withDemo, "demo", false, "send synthetic traffic with a noisy tenant and show a live table")
	f.StringVar(&dataDir, "data-dir", ".tenantguard", "where NATS and ClickHouse keep their data")
	f.IntVar(&lc.Tenants, "tenants", lc.Tenants, "demo: number of tenants")
	f.Float64Var(&lc.Rate, "rate", lc.Rate, "demo: total events/s outside the spike")
	f.StringVar(&lc.Noisy, "noisy", lc.Noisy, "demo: id of the noisy tenant")
	f.Float64Var(&lc.NoisyFactor, "noisy-factor", lc.NoisyFactor, "demo: rate multiplier of the noisy tenant")
	f.DurationVar(&lc.SpikeAfter, "spike-after", lc.SpikeAfter, "demo: when the spike starts")
	f.DurationVar(&lc.SpikeFor, "spike-for", lc.SpikeFor, "demo: how long the spike lasts")
	f.DurationVar(&lc.Duration, "duration", 0, "stop after this long (0 = until interrupted)")
	return cmd
}

func runDev(ctx context.Context, a *app, dataDir string, withDemo bool, lc loadgen.Config) error {
	if lc.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, lc.Duration)
		defer cancel()
	}
	stack, err := devstack.Start(&a.cfg, devstack.Options{DataDir: dataDir, Demo: withDemo, UserSet: a.userSet})
	if err != nil {
		return err
	}
	defer stack.Close()
	// Ctrl-C on the terminal stops dev without a signal to make (see StopKeys).
	ctx, stopNow := context.WithCancel(ctx)
	defer stopNow()
	restore := devstack.StopKeys(ctx, stopNow)
	defer restore()
	fmt.Fprint(a.stderr, stack.Banner(stack.CLIHint()))

	g, gctx := errgroup.WithContext(ctx)
	started := make(chan *daemon.Daemon, 1)
	// daemon.New validates the config after dev's last change to it.
	d, err := a.newDaemon(func(d *daemon.Daemon) { started <- d })
	if err != nil {
		return err
	}
	g.Go(func() error { return d.Run(gctx) })
	if withDemo {
		g.Go(func() error { return stack.RunDemo(gctx, started, a.cfg, lc, a.stdout, a.log) })
	}
	err = g.Wait()
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}
