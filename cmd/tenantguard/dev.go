package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/loadgen"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/internal/chserver"
	"github.com/tenantguard/tenantguard/internal/daemon"
	"github.com/tenantguard/tenantguard/internal/demo"
	"github.com/tenantguard/tenantguard/internal/natsserver"
	"github.com/tenantguard/tenantguard/limiter"
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
	if chserver.Binary() == "" {
		return fmt.Errorf("clickhouse-server is not installed; install it with:\n  %s", chserver.InstallHint)
	}
	if lc.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, lc.Duration)
		defer cancel()
	}
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	ns, err := natsserver.Start(natsserver.Options{StoreDir: filepath.Join(abs, "nats"), Port: freePort(), MaxStore: 4 << 30})
	if err != nil {
		return err
	}
	natsURL := ns.ClientURL()
	defer ns.Shutdown()
	ch, err := chserver.Start(filepath.Join(abs, "clickhouse"), freePort(), freePort())
	if err != nil {
		return err
	}
	defer ch.Stop()
	if a.cfg.Pricing.Version == pricing.DefaultConfig().Version && len(a.cfg.Pricing.Prices) == 0 {
		a.cfg.Pricing = demo.Pricing()
	}
	if withDemo && !a.userSet("anomaly.warmup_windows") {
		// Fresh tenants have no history: learn for 3 minutes instead of an hour,
		// so the demo's spike (after 5 minutes) is judged against a baseline.
		a.cfg.Anomaly.WarmupWindows = 3
		a.cfg.Anomaly.QuietPeriod = 2 * time.Minute
		a.cfg.Anomaly.Cooldown = 2 * time.Minute
		a.cfg.Anomaly.BaselineHalfLife = 10 * time.Minute
		fmt.Fprintln(a.stderr, "dev: demo anomaly settings: warmup 3 windows, quiet period 2m, cooldown 2m, baseline half-life 10m")
	}
	if !a.userSet("decisions.signing_key_file") {
		// Decisions are signed: keep a key beside the data, made once.
		key := filepath.Join(abs, "decisions.key")
		if err := ensureSigningKey(key); err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		a.cfg.Decisions.SigningKeyFile = key
	}
	if signer, err := limiter.LoadSigner(a.cfg.Decisions.SigningKeyFile); err == nil {
		fmt.Fprintf(a.stderr, "dev: decisions signed with %s; limiters trust %s\n",
			a.cfg.Decisions.SigningKeyFile, limiter.FormatPublicKey(signer.PublicKey()))
	}
	a.cfg.NATS.URL = natsURL
	a.cfg.ClickHouse.Addr = []string{ch.Addr}
	a.cfg.Metrics.Listen = preferPort(a.cfg.Metrics.Listen)
	a.cfg.API.Listen = preferPort(a.cfg.API.Listen)
	fmt.Fprintf(a.stderr, "dev: NATS %s  ClickHouse %s (client: clickhouse-client --port %s)\n"+
		"dev: metrics http://%s/metrics  API http://%s  data %s\n",
		natsURL, ch.Addr, portOf(ch.Addr), hostPort(a.cfg.Metrics.Listen), hostPort(a.cfg.API.Listen), abs)

	g, gctx := errgroup.WithContext(ctx)
	started := make(chan *daemon.Daemon, 1)
	d, err := a.newDaemon(func(d *daemon.Daemon) { started <- d })
	if err != nil {
		return err
	}
	g.Go(func() error { return d.Run(gctx) })
	if withDemo {
		g.Go(func() error {
			var d *daemon.Daemon
			select {
			case d = <-started:
			case <-gctx.Done():
				return nil
			}
			gen, nc, em, err := a.traffic(gctx, lc, "demo", emit.Block)
			if err != nil {
				return err
			}
			defer nc.Close()
			defer em.Close(context.Background())
			signer, err := limiter.LoadSigner(a.cfg.Decisions.SigningKeyFile)
			if err != nil {
				return err
			}
			return demo.Run(gctx, demo.Deps{Daemon: d, NATS: nc, Emitter: em, Generator: gen, Noisy: lc.Noisy,
				TrustedKey: limiter.FormatPublicKey(signer.PublicKey()), Out: a.stdout, Logger: a.log})
		})
	}
	err = g.Wait()
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// preferPort keeps addr when it is free on loopback, else picks a free port.
func preferPort(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "127.0.0.1:" + strconv.Itoa(freePort())
	}
	if host == "" {
		host = "127.0.0.1"
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return net.JoinHostPort(host, strconv.Itoa(freePort()))
	}
	l.Close()
	return net.JoinHostPort(host, port)
}

func hostPort(addr string) string {
	if len(addr) > 0 && addr[0] == ':' {
		return "127.0.0.1" + addr
	}
	return addr
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
