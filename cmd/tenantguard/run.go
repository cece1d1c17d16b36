package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

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

// runDaemon wires the stages and blocks until ctx ends. started, when not
// nil, is called once every listener is up.
func runDaemon(ctx context.Context, a *app, started func(d *daemon)) error {
	cfg := a.cfg
	log := a.log
	d := &daemon{a: a, reg: prometheus.NewRegistry()}
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	validator, err := event.NewValidator(event.Rules{CustomKinds: cfg.Collector.CustomKinds})
	if err != nil {
		return err
	}
	if d.book, err = pricing.New(cfg.Pricing, validator.KnownKind); err != nil {
		return err
	}
	nc, err := a.connectNATS("daemon")
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
	if cfg.ClickHouse.Migrate {
		if err := migrateWithRetry(ctx, a, d.store); err != nil {
			return err
		}
	}
	if cfg.ClickHouse.RetentionDays > 0 {
		d.services = append(d.services, retentionLoop(d))
	}
	var observers []collector.Observer
	if cfg.Exporter.Enabled {
		m, err := metrics.New(cfg.Exporter.Config, d.reg)
		if err != nil {
			return err
		}
		defer m.Close()
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
		var det *anomaly.Detector
		det, active, err = startAnomaly(ctx, d, nc, extra...)
		if err != nil {
			return err
		}
		observers = append(observers, det)
	}
	d.status = d.guardStatus(active)
	if cfg.PGStat.Enabled {
		if err := startPGStat(d, nc); err != nil {
			return err
		}
	}
	defer func() {
		for _, c := range d.closers {
			_ = c()
		}
	}()
	var colHealthy func() bool
	if cfg.Collector.Enabled {
		col, err := collector.New(cfg.Collector, collector.Deps{
			JetStream: d.js, Store: d.store, Pricer: d.book, Observers: observers,
			Registry: d.reg, Logger: log,
		})
		if err != nil {
			return err
		}
		defer col.Close()
		d.services = append(d.services, col.Run)
		colHealthy = col.Healthy
	}

	metricsMux := http.NewServeMux()
	gather := append(prometheus.Gatherers{d.reg}, d.gatherers...)
	metricsMux.Handle("GET /metrics", promhttp.HandlerFor(gather, promhttp.HandlerOpts{Registry: d.reg}))
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
	var ready []func(context.Context) error
	if colHealthy != nil {
		ready = append(ready, func(context.Context) error {
			if !colHealthy() {
				return errors.New("collector: ClickHouse inserts are failing")
			}
			return nil
		})
	}
	apiSrv, err := api.New(cfg.API, api.Deps{DB: apiStore, Exporter: exp, Logger: log, Currency: cfg.Pricing.Currency, Ready: ready})
	if err != nil {
		return err
	}
	defer apiSrv.Close()
	d.services = append(d.services, apiSrv.Run)

	g, gctx := errgroup.WithContext(ctx)
	ln, err := net.Listen("tcp", cfg.Metrics.Listen)
	if err != nil {
		return fmt.Errorf("metrics listener %s: %w", cfg.Metrics.Listen, err)
	}
	log.Info("listening", "component", "metrics", "addr", ln.Addr().String())
	msrv := &http.Server{Handler: metricsMux, ReadHeaderTimeout: 10 * time.Second}
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
	for _, run := range d.services {
		g.Go(func() error { return run(gctx) })
	}
	if started != nil {
		started(d)
	}
	err = g.Wait()
	log.Info("stopped")
	return err
}

// migrateWithRetry applies the schema, waiting for ClickHouse to come up.
func migrateWithRetry(ctx context.Context, a *app, st *store.Store) error {
	wait := 500 * time.Millisecond
	for {
		mctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err := st.Migrate(mctx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		a.log.Warn("clickhouse migrate failed; retrying", "component", "store", "err", err, "backoff", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 10*time.Second)
	}
}
