package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/anomaly/notify"
	"github.com/tenantguard/tenantguard/collector"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/exporter/api"
	"github.com/tenantguard/tenantguard/exporter/billing"
	"github.com/tenantguard/tenantguard/exporter/metrics"
	"github.com/tenantguard/tenantguard/limiter"
)

func newRunCmd(a *app) *cobra.Command {
	var cpuProfile string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon: the stages switched on in config",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			stopProfile, err := startCPUProfile(cpuProfile)
			if err != nil {
				return err
			}
			defer stopProfile()
			return runDaemon(ctx, a, nil)
		},
	}
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the daemon to this file until it stops")
	return cmd
}

// startCPUProfile writes a CPU profile to path until the returned func is
// called; an empty path profiles nothing.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// daemon holds what the stages share while `run` or `dev` lives.
type daemon struct {
	a         *app
	reg       *prometheus.Registry
	store     *store.Store
	js        jetstream.JetStream
	book      *pricing.Book
	metrics   *metrics.Metrics // nil when the exporter is off
	services  []func(ctx context.Context) error
	closers   []func() error
	fanout    *notify.Fanout       // alert sinks, when a stage raises alerts
	gatherers prometheus.Gatherers // registries served beside reg
	decisions *limiter.Publisher   // nil when the decision engine is off
	guardMu   sync.Mutex
	guard     map[string]string          // tenant -> decision status, for the live view
	status    func(tenant string) string // guard status per tenant for the live view (anomaly, throttle)
}

// runDaemon wires the stages and blocks until ctx ends. The listeners come
// first, so /healthz answers at once and /readyz says what start-up waits
// for (ClickHouse, NATS); the stages start once their servers answer.
// started, when not nil, is called once every stage runs.
func runDaemon(ctx context.Context, a *app, started func(d *daemon)) error {
	start := time.Now()
	cfg := a.cfg
	log := a.log
	d := &daemon{a: a, reg: prometheus.NewRegistry()}
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if err := checkSigningKey(a); err != nil {
		return err
	}
	validator, err := event.NewValidator(event.Rules{CustomKinds: cfg.Collector.CustomKinds})
	if err != nil {
		return err
	}
	if d.book, err = pricing.New(cfg.Pricing, validator.KnownKind); err != nil {
		return err
	}
	nc, err := a.connectNATS("daemon") // returns at once; connects in the background
	if err != nil {
		return err
	}
	defer nc.Close()
	if d.js, err = jetstream.New(nc); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	if d.store, err = store.Open(ctx, cfg.ClickHouse); err != nil {
		return err
	}
	defer d.store.Close()
	defer func() {
		for _, c := range d.closers {
			_ = c()
		}
	}()
	ready := newReadiness(nc)

	// The API gets a pool of its own, so slow readers of exports can never
	// take the connections the collector inserts with.
	apiCH := cfg.ClickHouse
	apiCH.MaxOpenConns = max(apiCH.MaxOpenConns, cfg.API.MaxConcurrentExports+4) // exports never starve the JSON endpoints
	apiStore, err := store.Open(ctx, apiCH)
	if err != nil {
		return err
	}
	defer apiStore.Close()
	exp, err := billing.New(cfg.Billing, apiStore)
	if err != nil {
		return err
	}
	apiSrv, err := api.New(cfg.API, api.Deps{DB: apiStore, Exporter: exp, Logger: log, Currency: cfg.Pricing.Currency, Ready: ready.checks()})
	if err != nil {
		return err
	}
	defer apiSrv.Close()
	// /metrics serves the daemon's registry, and the stages' own registries
	// once they exist.
	var metricsHandler atomic.Pointer[http.Handler]
	serveMetrics := func(gather prometheus.Gatherer) {
		h := promhttp.HandlerFor(gather, promhttp.HandlerOpts{Registry: d.reg})
		metricsHandler.Store(&h)
	}
	serveMetrics(d.reg)
	metricsMux := http.NewServeMux()
	metricsMux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) { (*metricsHandler.Load()).ServeHTTP(w, r) })
	ln, err := net.Listen("tcp", cfg.Metrics.Listen)
	if err != nil {
		return fmt.Errorf("metrics listener %s: %w", cfg.Metrics.Listen, err)
	}
	log.Info("listening", "component", "metrics", "addr", ln.Addr().String())
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

	if err := startStages(gctx, d, nc, ready); err != nil {
		cancel()
		if werr := g.Wait(); werr != nil {
			return werr
		}
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return err
	}
	serveMetrics(append(prometheus.Gatherers{d.reg}, d.gatherers...))
	for _, run := range d.services {
		g.Go(func() error { return run(gctx) })
	}
	ready.started()
	log.Info("started", "component", "daemon", "duration", time.Since(start).Round(time.Millisecond))
	if started != nil {
		started(d)
	}
	err = g.Wait()
	log.Info("stopped")
	return err
}

// startStages applies the schema and builds the stages switched on, waiting
// for ClickHouse and NATS as long as ctx lasts. Each stage's Run is added to
// d.services, its Close to d.closers.
func startStages(ctx context.Context, d *daemon, nc *nats.Conn, ready *readiness) error {
	cfg, log := d.a.cfg, d.a.log
	if cfg.ClickHouse.Migrate {
		ready.waitingFor("the ClickHouse schema migration")
		if err := migrateWithRetry(ctx, d.a, d.store); err != nil {
			return err
		}
	}
	// Every stage that needs NATS at start (the decisions buckets, the
	// collector's streams) waits for JetStream here rather than give up.
	ready.waitingFor("NATS JetStream")
	if err := retryUntil(ctx, log, "daemon", "nats jetstream", 5*time.Second, func(ctx context.Context) error {
		_, err := d.js.AccountInfo(ctx)
		return err
	}); err != nil {
		return err
	}
	ready.waitingFor("the stages to start")
	if cfg.ClickHouse.RetentionDays > 0 {
		d.services = append(d.services, retentionLoop(d))
	}
	var observers []collector.Observer
	if cfg.Exporter.Enabled {
		m, err := metrics.New(cfg.Exporter.Config, d.reg)
		if err != nil {
			return err
		}
		d.closers = append(d.closers, m.Close)
		d.metrics = m
		observers = append(observers, m)
		book := d.book
		m.SetSpendCapSource(func(tenant string) (float64, bool) {
			limit, ok := book.SpendCap(book.Plan(tenant))
			return limit.InexactFloat64(), ok
		})
	}
	var active *activeAlerts
	if cfg.Anomaly.Enabled {
		var extra []anomaly.Sink
		if cfg.Decisions.Enabled {
			eng, err := startDecisions(ctx, d, nc)
			if err != nil {
				return err
			}
			extra = append(extra, eng)
		}
		det, alerts, err := startAnomaly(ctx, d, nc, extra...)
		if err != nil {
			return err
		}
		active = alerts
		observers = append(observers, det)
	}
	if cfg.Decisions.Enabled {
		if err := startDecisionsAudit(ctx, d, nc); err != nil {
			return err
		}
	}
	d.status = d.guardStatus(active)
	if cfg.PGStat.Enabled {
		if err := startPGStat(d, nc); err != nil {
			return err
		}
	}
	if cfg.Collector.Enabled {
		col, err := collector.New(cfg.Collector, collector.Deps{
			JetStream: d.js, Store: d.store, Pricer: d.book, Observers: observers,
			Registry: d.reg, Logger: log,
		})
		if err != nil {
			return err
		}
		d.closers = append(d.closers, col.Close)
		d.services = append(d.services, col.Run)
		ready.collector.Store(col)
	}
	return nil
}

// migrateWithRetry applies the schema, waiting for ClickHouse to come up.
func migrateWithRetry(ctx context.Context, a *app, st *store.Store) error {
	return retryUntil(ctx, a.log, "store", "clickhouse migrate", time.Minute, func(ctx context.Context) error {
		_, err := st.Migrate(ctx)
		return err
	})
}

// retryUntil runs fn until it succeeds or ctx ends, each attempt bounded
// by attempt, backing off from 500ms to 10s between failures, each logged.
func retryUntil(ctx context.Context, log *slog.Logger, component, what string, attempt time.Duration, fn func(context.Context) error) error {
	wait := 500 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		log.Warn(what+" failed; retrying", "component", component, "err", err, "backoff", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 10*time.Second)
	}
}
