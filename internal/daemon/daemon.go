package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/tenantguard/tenantguard/anomaly/advisor"
	"github.com/tenantguard/tenantguard/anomaly/decide"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/exporter/api"
	"github.com/tenantguard/tenantguard/exporter/billing"
	"github.com/tenantguard/tenantguard/exporter/metrics"
	"github.com/tenantguard/tenantguard/internal/backoff"
	"github.com/tenantguard/tenantguard/limiter"
)

// Options are what the caller of New hands in besides the Config.
type Options struct {
	// Logger receives every stage's logs. Default slog.Default().
	Logger *slog.Logger
	// Started, when set, is called once every stage runs.
	Started func(*Daemon)
}

// Daemon is `tenantguard run`: every stage switched on in its Config, the
// API and the metrics listener, over one NATS connection and two
// ClickHouse pools (ingest and API).
type Daemon struct {
	cfg     Config
	log     *slog.Logger
	started func(*Daemon)
	reg     *prometheus.Registry
	book    *pricing.Book
	signer  *limiter.Signer // nil when decisions are off

	// Built by Run; cleanup closes them in reverse order on every path.
	cleanupMu sync.Mutex
	cleanup   []func() error
	nc        *nats.Conn
	js        jetstream.JetStream
	store     *store.Store
	services  []func(ctx context.Context) error
	metrics   *metrics.Metrics   // nil when the exporter is off
	fanout    alertFanout        // nil until a stage raises alerts
	decisions *limiter.Publisher // nil when decisions are off
	engine    *decide.Engine     // nil when decisions are off
	guard     guardView          // what the live view shows per tenant
}

// New checks cfg and prepares a daemon; Run starts it. It does no I/O
// beyond reading the decisions signing key.
func New(cfg Config, opts Options) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: opts.Logger, started: opts.Started, reg: prometheus.NewRegistry()}
	if d.log == nil {
		d.log = slog.Default()
	}
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	validator, err := event.NewValidator(event.Rules{CustomKinds: cfg.Collector.CustomKinds})
	if err != nil {
		return nil, err
	}
	if d.book, err = pricing.New(cfg.Pricing, validator.KnownKind); err != nil {
		return nil, err
	}
	if cfg.Decisions.Enabled {
		if cfg.Decisions.SigningKeyFile == "" {
			return nil, errors.New("decisions.signing_key_file: needed while decisions.enabled is true")
		}
		if d.signer, err = limiter.LoadSigner(cfg.Decisions.SigningKeyFile); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// onClose pushes f on the cleanup stack.
func (d *Daemon) onClose(f func() error) {
	d.cleanupMu.Lock()
	d.cleanup = append(d.cleanup, f)
	d.cleanupMu.Unlock()
}

// Close closes whatever Run built, in reverse order. Run calls it before
// it returns; calling it again does nothing.
func (d *Daemon) Close() error {
	d.cleanupMu.Lock()
	fs := d.cleanup
	d.cleanup = nil
	d.cleanupMu.Unlock()
	var errs []error
	for i := len(fs) - 1; i >= 0; i-- {
		errs = append(errs, fs[i]())
	}
	return errors.Join(errs...)
}

// Run starts the daemon and blocks until ctx ends or a stage fails; it
// returns nil on cancel. The listeners come first, so /healthz answers at
// once and /readyz says what start-up waits for (ClickHouse, NATS); the
// stages start once their servers answer.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.Close()
	start := time.Now()
	cfg := d.cfg
	var err error
	if d.nc, err = ConnectNATS(cfg.NATS, d.log, "daemon"); err != nil { // returns at once; connects in the background
		return err
	}
	d.onClose(func() error { d.nc.Close(); return nil })
	if d.js, err = jetstream.New(d.nc); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if d.store, err = store.Open(ctx, cfg.ClickHouse); err != nil {
		return err
	}
	d.onClose(d.store.Close)
	ready := newReadiness(d.nc)

	// The API gets a pool of its own, so slow readers of exports can never
	// take the connections the collector inserts with.
	apiCH := cfg.ClickHouse
	apiCH.MaxOpenConns = max(apiCH.MaxOpenConns, cfg.API.MaxConcurrentExports+4) // exports never starve the JSON endpoints
	apiStore, err := store.Open(ctx, apiCH)
	if err != nil {
		return err
	}
	d.onClose(apiStore.Close)
	exp, err := billing.New(cfg.Billing, apiStore)
	if err != nil {
		return err
	}
	adv, err := advisor.New(cfg.Advisor.Config, advisor.Deps{Source: apiStore, Logger: d.log}) // reports only
	if err != nil {
		return err
	}
	apiSrv, err := api.New(cfg.API, api.Deps{DB: apiStore, Exporter: exp, Advisor: adv, Logger: d.log,
		Currency: cfg.Pricing.Currency, Ready: ready.checks()})
	if err != nil {
		return err
	}
	d.onClose(apiSrv.Close)
	metricsMux := http.NewServeMux()
	metricsMux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg}))
	ln, err := net.Listen("tcp", cfg.Metrics.Listen)
	if err != nil {
		return fmt.Errorf("metrics listener %s: %w", cfg.Metrics.Listen, err)
	}
	d.log.Info("listening", "component", "metrics", "addr", ln.Addr().String())
	msrv := &http.Server{Handler: metricsMux, ReadHeaderTimeout: 10 * time.Second}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return apiSrv.Run(gctx) })
	g.Go(func() error {
		if err := msrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("metrics server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return msrv.Shutdown(sctx)
	})

	if err := d.startStages(gctx, ready); err != nil {
		cancel()
		if werr := g.Wait(); werr != nil {
			return werr
		}
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return err
	}
	for _, run := range d.services {
		g.Go(func() error { return run(gctx) })
	}
	ready.started()
	d.log.Info("started", "component", "daemon", "duration", time.Since(start).Round(time.Millisecond))
	if d.started != nil {
		d.started(d)
	}
	err = g.Wait()
	d.log.Info("stopped")
	return err
}

// retryUntil runs fn until it succeeds or ctx ends, each attempt bounded
// by attempt, backing off from 500ms to 10s between failures, each logged.
func retryUntil(ctx context.Context, log *slog.Logger, component, what string, attempt time.Duration, fn func(context.Context) error) error {
	_, err := backoff.Retry(ctx, backoff.Policy{Min: 500 * time.Millisecond, Max: 10 * time.Second, Retries: -1},
		func(ctx context.Context) error {
			actx, cancel := context.WithTimeout(ctx, attempt)
			defer cancel()
			return fn(actx)
		},
		func(_ int, err error, wait time.Duration) {
			log.Warn(what+" failed; retrying", "component", component, "err", err, "backoff", wait)
		})
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Metrics returns the exporter's per-tenant metrics, nil when it is off.
func (d *Daemon) Metrics() *metrics.Metrics { return d.metrics }

// Book returns the price book.
func (d *Daemon) Book() *pricing.Book { return d.book }

// Status is a tenant's decision and alert status for the live view, e.g.
// "THROTTLED 12/s  ALERT usage".
func (d *Daemon) Status(tenant string) string { return d.guard.status(tenant) }

// Guard is a tenant's decision and alert state for the live view.
func (d *Daemon) Guard(tenant string) Guard { return d.guard.guard(tenant) }

// Guarded returns every tenant with a live decision or a firing alert.
func (d *Daemon) Guarded() map[string]Guard { return d.guard.guarded() }

// Store returns the daemon's ClickHouse store, nil before Run opened it.
func (d *Daemon) Store() *store.Store { return d.store }

// JetStream returns the daemon's JetStream client, nil before Run connected.
func (d *Daemon) JetStream() jetstream.JetStream { return d.js }
