package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
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
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	// The ports of the last run when they are free, else the usual ones,
	// else any: the addresses stay the same from run to run.
	last := loadDevPorts(abs)
	ports := devPorts{NATS: pickPort(last.NATS, 4222)}
	ns, err := natsserver.Start(natsserver.Options{StoreDir: filepath.Join(abs, "nats"), Port: ports.NATS, MaxStore: devNATSMaxStore})
	if err != nil {
		return err
	}
	defer ns.Shutdown()
	ports.ClickHouse = pickPort(last.ClickHouse, 9000)
	ports.ClickHouseHTTP = pickPort(last.ClickHouseHTTP, 8123)
	ch, err := chserver.Start(filepath.Join(abs, "clickhouse"), ports.ClickHouse, ports.ClickHouseHTTP)
	if err != nil {
		return err
	}
	defer ch.Stop()
	ports.API = pickListen(devListen(a, "api.listen", last.API, a.cfg.API.Listen)...)
	ports.Metrics = pickListen(devListen(a, "metrics.listen", last.Metrics, a.cfg.Metrics.Listen)...)
	if err := saveDevPorts(abs, ports); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	a.cfg.NATS.URL = ns.ClientURL()
	a.cfg.ClickHouse.Addr = []string{ch.Addr}
	a.cfg.API.Listen, a.cfg.Metrics.Listen = ports.API, ports.Metrics

	if a.cfg.Pricing.Version == pricing.DefaultConfig().Version && len(a.cfg.Pricing.Prices) == 0 {
		a.cfg.Pricing = demo.Pricing()
	}
	if withDemo && !a.userSet("anomaly.warmup_windows") {
		// Fresh tenants have no history: learn for 3 minutes instead of an hour,
		// so the demo's spike (after 5 minutes) is judged against a baseline.
		a.cfg.Anomaly.WarmupWindows = demoWarmup
		a.cfg.Anomaly.QuietPeriod = 2 * time.Minute
		a.cfg.Anomaly.Cooldown = 2 * time.Minute
		a.cfg.Anomaly.BaselineHalfLife = 10 * time.Minute
	}
	bounds := a.boundDevData()
	if !a.userSet("decisions.signing_key_file") {
		// Decisions are signed: keep a key beside the data, made once.
		key := filepath.Join(abs, "decisions.key")
		if err := ensureSigningKey(key); err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		a.cfg.Decisions.SigningKeyFile = key
	}
	signer, err := limiter.LoadSigner(a.cfg.Decisions.SigningKeyFile)
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	trusted := limiter.FormatPublicKey(signer.PublicKey())
	token, sum, err := devToken(abs)
	if err != nil {
		return err
	}
	a.cfg.API.Tokens = withDevToken(a.cfg.API.Tokens, sum)
	cfgPath := filepath.Join(abs, "tenantguard.yaml")
	if err := writeDevConfig(cfgPath, abs, a.cfg, withDemo); err != nil {
		return fmt.Errorf("dev: write %s: %w", cfgPath, err)
	}
	// Ctrl-C on the terminal stops dev without a signal to make (see stopKeys).
	ctx, stopNow := context.WithCancel(ctx)
	defer stopNow()
	restore := stopKeys(ctx, stopNow)
	defer restore()

	addrs := devAddresses{NATS: a.cfg.NATS.URL, ClickHouse: ch.Addr, ClickHouseHTTP: ch.HTTP,
		API: "http://" + ports.API, Metrics: "http://" + ports.Metrics + "/metrics", Token: token}
	fmt.Fprint(a.stderr, addrs.banner(abs, cfgPath, a.cfg.Decisions.SigningKeyFile, trusted, bounds, a.cliHint(cfgPath)))
	if withDemo && !a.userSet("anomaly.warmup_windows") {
		fmt.Fprintln(a.stderr, "dev: detector    demo settings: warmup 3 windows, quiet period 2m, cooldown 2m, baseline half-life 10m")
	}

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
			return demo.Run(gctx, demo.Deps{Daemon: d, NATS: nc, Emitter: em, Generator: gen, Noisy: lc.Noisy,
				TrustedKey: trusted, Currency: a.cfg.Pricing.Currency, Tenants: lc.Tenants,
				Header: addrs.header(), Out: a.stdout, Logger: a.log})
		})
	}
	err = g.Wait()
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

// demoWarmup is the detector's warmup under `dev --demo`, in windows.
const demoWarmup = 3

// devNATSMaxStore bounds the dev NATS server's JetStream files.
const devNATSMaxStore = 1 << 30

// boundDevData keeps the dev data directory bounded, so the demo can run
// for a day on a laptop, unless the config sets these keys itself:
// events are kept one day (retention drops daily partitions), the usage
// stream keeps an hour and at most 256 MiB once stored, and the collector
// writes a part every 2 s rather than every 0.5 s, which is 4x fewer
// parts for ClickHouse to merge. The generated ClickHouse config deletes
// merged-away parts after a minute (chserver). It returns what it set, for
// the banner.
func (a *app) boundDevData() string {
	var set []string
	if !a.userSet("clickhouse.retention_days") {
		a.cfg.ClickHouse.RetentionDays = 1
		set = append(set, "events kept 1 day")
	}
	if !a.userSet("collector.stream.max_age") && !a.userSet("collector.stream.max_bytes") {
		a.cfg.Collector.Stream.MaxAge, a.cfg.Collector.Stream.MaxBytes = time.Hour, 256<<20
		set = append(set, "stream 1h/256 MiB")
	}
	if !a.userSet("collector.batch_max_wait") {
		a.cfg.Collector.BatchMaxWait = 2 * time.Second
		set = append(set, "a ClickHouse part every 2s")
	}
	return strings.Join(set, ", ")
}

// devListen is where dev tries to listen for key: the configured address
// when the config sets it, else the last run's, else the default.
func devListen(a *app, key, last, def string) []string {
	if a.userSet(key) {
		return []string{def}
	}
	return []string{last, def}
}

// cliHint is how to run the CLI against the dev stack from here.
func (a *app) cliHint(cfgPath string) string {
	wd, err := os.Getwd()
	if err == nil && cfgPath == filepath.Join(wd, devConfigFile) {
		if _, err := os.Stat("tenantguard.yaml"); err == nil {
			return "commands run here read ./tenantguard.yaml first; add --config " + devConfigFile
		}
		return "commands run from this folder find the dev stack with no flags"
	}
	return "add --config " + cfgPath + " (commands look for " + devConfigFile + " only in the folder they run from)"
}

// devAddresses are what dev prints once at start and the live table
// repeats in its header.
type devAddresses struct {
	NATS, ClickHouse, ClickHouseHTTP, API, Metrics, Token string
}

func (d devAddresses) banner(dataDir, cfgPath, keyFile, trusted, bounds, cli string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "dev: NATS        %s\n", d.NATS)
	fmt.Fprintf(&b, "dev: ClickHouse  %s (clickhouse-client --port %s), HTTP %s\n", d.ClickHouse, portOf(d.ClickHouse), d.ClickHouseHTTP)
	fmt.Fprintf(&b, "dev: API         %s   admin token %s\n", d.API, d.Token)
	day := time.Now().UTC().Truncate(24 * time.Hour)
	fmt.Fprintf(&b, "dev:             curl -H 'Authorization: Bearer %s' '%s/api/v1/costs?from=%s&to=%s'\n",
		d.Token, d.API, day.Format(time.RFC3339), day.AddDate(0, 0, 1).Format(time.RFC3339))
	fmt.Fprintf(&b, "dev: metrics     %s\n", d.Metrics)
	fmt.Fprintf(&b, "dev: CLI         %s (%s)\n", cli, cfgPath)
	fmt.Fprintf(&b, "dev: decisions   signed with %s; limiters trust %s\n", keyFile, trusted)
	fmt.Fprintf(&b, "dev: data        %s (%s; `make clean` removes it)\n", dataDir, bounds)
	return b.String()
}

// header is the live table's reminder of the addresses.
func (d devAddresses) header() []string {
	return []string{
		fmt.Sprintf("NATS %s   ClickHouse %s   metrics %s", d.NATS, d.ClickHouse, d.Metrics),
		fmt.Sprintf("API %s   token %s", d.API, d.Token),
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
