package devstack

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/loadgen"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/internal/chserver"
	"github.com/tenantguard/tenantguard/internal/daemon"
	"github.com/tenantguard/tenantguard/internal/demo"
	"github.com/tenantguard/tenantguard/internal/natsserver"
	"github.com/tenantguard/tenantguard/limiter"
)

// ConfigFile is where `tenantguard dev` writes the live addresses of the
// dev stack, relative to the folder it runs in; ConfigMarker is its first
// line. The CLI's loader reads it only when it starts with the marker.
const (
	ConfigFile   = ".tenantguard/tenantguard.yaml"
	ConfigMarker = "# Written by `tenantguard dev`"
)

// DemoWarmup is the detector's warmup under `dev --demo`, in windows.
const DemoWarmup = 3

// natsMaxStore bounds the dev NATS server's JetStream files.
const natsMaxStore = 1 << 30

// Options say where the stack keeps its data and which config keys it
// leaves alone.
type Options struct {
	// DataDir holds the servers' data, the ports, the token and the config
	// file; it is made if missing.
	DataDir string
	// Demo applies the demo's detector settings (a short warmup) unless
	// the config sets anomaly.warmup_windows.
	Demo bool
	// UserSet reports whether the config file or the environment set a
	// key; Start changes no key the user set. Nil means none was.
	UserSet func(key string) bool
}

// Stack is a running dev stack.
type Stack struct {
	Dir        string // the data directory, absolute
	ConfigPath string // the config file written for other commands
	KeyFile    string // the decisions signing key
	TrustedKey string // its public key, for limiters
	Bounds     string // what Start bounded, for the banner
	Demo       bool   // the demo's detector settings were applied
	Addresses  Addresses

	nats *server.Server
	ch   *chserver.Server
}

// Addresses are what dev prints once at start and the live table repeats
// in its header.
type Addresses struct {
	NATS, ClickHouse, ClickHouseHTTP, API, Metrics, Token string
}

// Start starts the servers under opts.DataDir and points cfg at them: the
// NATS URL, the ClickHouse address, free API and metrics listeners, a
// demo price book when none is configured, the data bounds, the signing
// key and the dev admin token. It writes the dev config file last.
func Start(cfg *daemon.Config, opts Options) (s *Stack, err error) {
	if chserver.Binary() == "" {
		return nil, fmt.Errorf("clickhouse-server is not installed; install it with:\n  %s", chserver.InstallHint)
	}
	userSet := opts.UserSet
	if userSet == nil {
		userSet = func(string) bool { return false }
	}
	abs, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	s = &Stack{Dir: abs}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// The ports of the last run when they are free, else the usual ones,
	// else any: the addresses stay the same from run to run.
	last := loadPorts(abs)
	p := ports{NATS: pickPort(last.NATS, 4222)}
	if s.nats, err = natsserver.Start(natsserver.Options{StoreDir: filepath.Join(abs, "nats"), Port: p.NATS, MaxStore: natsMaxStore}); err != nil {
		return nil, err
	}
	p.ClickHouse = pickPort(last.ClickHouse, 9000)
	p.ClickHouseHTTP = pickPort(last.ClickHouseHTTP, 8123)
	if s.ch, err = chserver.Start(filepath.Join(abs, "clickhouse"), p.ClickHouse, p.ClickHouseHTTP); err != nil {
		return nil, err
	}
	p.API = pickListen(listenCandidates(userSet("api.listen"), last.API, cfg.API.Listen)...)
	p.Metrics = pickListen(listenCandidates(userSet("metrics.listen"), last.Metrics, cfg.Metrics.Listen)...)
	if err := savePorts(abs, p); err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	cfg.NATS.URL = s.nats.ClientURL()
	cfg.ClickHouse.Addr = []string{s.ch.Addr}
	cfg.API.Listen, cfg.Metrics.Listen = p.API, p.Metrics

	if cfg.Pricing.Version == pricing.DefaultConfig().Version && len(cfg.Pricing.Prices) == 0 {
		cfg.Pricing = demo.Pricing()
	}
	if opts.Demo && !userSet("anomaly.warmup_windows") {
		// Fresh tenants have no history: learn for 3 minutes instead of an hour,
		// so the demo's spike (after 5 minutes) is judged against a baseline.
		cfg.Anomaly.WarmupWindows = DemoWarmup
		cfg.Anomaly.QuietPeriod = 2 * time.Minute
		cfg.Anomaly.Cooldown = 2 * time.Minute
		cfg.Anomaly.BaselineHalfLife = 10 * time.Minute
		s.Demo = true
	}
	s.Bounds = boundData(cfg, userSet)
	if !userSet("decisions.signing_key_file") {
		// Decisions are signed: keep a key beside the data, made once.
		key := filepath.Join(abs, "decisions.key")
		if err := daemon.EnsureSigningKey(key); err != nil {
			return nil, fmt.Errorf("dev: %w", err)
		}
		cfg.Decisions.SigningKeyFile = key
	}
	signer, err := limiter.LoadSigner(cfg.Decisions.SigningKeyFile)
	if err != nil {
		return nil, fmt.Errorf("dev: %w", err)
	}
	s.KeyFile, s.TrustedKey = cfg.Decisions.SigningKeyFile, limiter.FormatPublicKey(signer.PublicKey())
	token, sum, err := apiToken(abs)
	if err != nil {
		return nil, err
	}
	cfg.API.Tokens = withToken(cfg.API.Tokens, sum)
	s.ConfigPath = filepath.Join(abs, "tenantguard.yaml")
	if err := writeConfig(s.ConfigPath, abs, *cfg, opts.Demo); err != nil {
		return nil, fmt.Errorf("dev: write %s: %w", s.ConfigPath, err)
	}
	s.Addresses = Addresses{NATS: cfg.NATS.URL, ClickHouse: s.ch.Addr, ClickHouseHTTP: s.ch.HTTP,
		API: "http://" + p.API, Metrics: "http://" + p.Metrics + "/metrics", Token: token}
	return s, nil
}

// Close stops ClickHouse, then NATS. It may be called more than once.
func (s *Stack) Close() {
	if s.ch != nil {
		s.ch.Stop()
		s.ch = nil
	}
	if s.nats != nil {
		s.nats.Shutdown()
		s.nats = nil
	}
}

// boundData keeps the dev data directory bounded, so the demo can run for
// a day on a laptop, unless the config sets these keys itself: events are
// kept one day (retention drops daily partitions), the usage stream keeps
// an hour and at most 256 MiB once stored, and the collector writes a part
// every 2 s rather than every 0.5 s, which is 4x fewer parts for
// ClickHouse to merge. The generated ClickHouse config deletes merged-away
// parts after a minute (chserver). It returns what it set, for the banner.
func boundData(cfg *daemon.Config, userSet func(string) bool) string {
	var set []string
	if !userSet("clickhouse.retention_days") {
		cfg.ClickHouse.RetentionDays = 1
		set = append(set, "events kept 1 day")
	}
	if !userSet("collector.stream.max_age") && !userSet("collector.stream.max_bytes") {
		cfg.Collector.Stream.MaxAge, cfg.Collector.Stream.MaxBytes = time.Hour, 256<<20
		set = append(set, "stream 1h/256 MiB")
	}
	if !userSet("collector.batch_max_wait") {
		cfg.Collector.BatchMaxWait = 2 * time.Second
		set = append(set, "a ClickHouse part every 2s")
	}
	return strings.Join(set, ", ")
}

// listenCandidates is where dev tries to listen: the configured address
// when the config sets it, else the last run's, else the default.
func listenCandidates(userSet bool, last, def string) []string {
	if userSet {
		return []string{def}
	}
	return []string{last, def}
}

// Banner is what dev prints at start; cli says how to run the CLI against
// the stack.
func (s *Stack) Banner(cli string) string {
	d := s.Addresses
	var b strings.Builder
	fmt.Fprintf(&b, "dev: NATS        %s\n", d.NATS)
	fmt.Fprintf(&b, "dev: ClickHouse  %s (clickhouse-client --port %s), HTTP %s\n", d.ClickHouse, portOf(d.ClickHouse), d.ClickHouseHTTP)
	fmt.Fprintf(&b, "dev: API         %s   admin token %s\n", d.API, d.Token)
	day := time.Now().UTC().Truncate(24 * time.Hour)
	fmt.Fprintf(&b, "dev:             curl -H 'Authorization: Bearer %s' '%s/api/v1/costs?from=%s&to=%s'\n",
		d.Token, d.API, day.Format(time.RFC3339), day.AddDate(0, 0, 1).Format(time.RFC3339))
	fmt.Fprintf(&b, "dev: metrics     %s\n", d.Metrics)
	fmt.Fprintf(&b, "dev: CLI         %s (%s)\n", cli, s.ConfigPath)
	fmt.Fprintf(&b, "dev: decisions   signed with %s; limiters trust %s\n", s.KeyFile, s.TrustedKey)
	fmt.Fprintf(&b, "dev: data        %s (%s; `make clean` removes it)\n", s.Dir, s.Bounds)
	if s.Demo {
		b.WriteString("dev: detector    demo settings: warmup 3 windows, quiet period 2m, cooldown 2m, baseline half-life 10m\n")
	}
	return b.String()
}

// Header is the live table's reminder of the addresses.
func (s *Stack) Header() []string {
	d := s.Addresses
	return []string{
		fmt.Sprintf("NATS %s   ClickHouse %s   metrics %s", d.NATS, d.ClickHouse, d.Metrics),
		fmt.Sprintf("API %s   token %s", d.API, d.Token),
	}
}

// CLIHint is how to run the CLI against the dev stack from the current
// folder.
func (s *Stack) CLIHint() string {
	wd, err := os.Getwd()
	if err == nil && s.ConfigPath == filepath.Join(wd, ConfigFile) {
		if _, err := os.Stat("tenantguard.yaml"); err == nil {
			return "commands run here read ./tenantguard.yaml first; add --config " + ConfigFile
		}
		return "commands run from this folder find the dev stack with no flags"
	}
	return "add --config " + s.ConfigPath + " (commands look for " + ConfigFile + " only in the folder they run from)"
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// RunDemo waits for the daemon to start, then sends lc's synthetic traffic
// through the limiter SDK as a service would and prints the live view on
// out (see demo.Run), until ctx ends or the traffic is done.
func (s *Stack) RunDemo(ctx context.Context, started <-chan *daemon.Daemon, cfg daemon.Config, lc loadgen.Config, out io.Writer, log *slog.Logger) error {
	var d *daemon.Daemon
	select {
	case d = <-started:
	case <-ctx.Done():
		return nil
	}
	gen, nc, em, err := daemon.Traffic(ctx, cfg, log, lc, "demo", emit.Block)
	if err != nil {
		return err
	}
	defer nc.Close()
	defer em.Close(context.Background())
	return demo.Run(ctx, demo.Deps{Daemon: d, NATS: nc, Emitter: em, Generator: gen, Noisy: lc.Noisy,
		TrustedKey: s.TrustedKey, Currency: cfg.Pricing.Currency, Tenants: lc.Tenants,
		Header: s.Header(), Out: out, Logger: log})
}
