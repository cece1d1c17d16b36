package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/tenantguard/tenantguard/collector"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/collector/store"
)

func newRunCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "run",
		Short: "Run the daemon: the stages switched on in config",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runDaemon(ctx, a, nil)
		},
	}
}

// daemon holds what the stages share while `run` or `dev` lives.
type daemon struct {
	a        *app
	reg      *prometheus.Registry
	store    *store.Store
	js       jetstream.JetStream
	book     *pricing.Book
	ready    []func() error // readiness checks
	services []func(ctx context.Context) error
	status   func(tenant string) string // guard status per tenant for the live view (anomaly, throttle)
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
	d.ready = append(d.ready, func() error {
		pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return d.store.Ping(pctx)
	})

	var observers []collector.Observer
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
		d.ready = append(d.ready, func() error {
			if !col.Healthy() {
				return errors.New("collector: ClickHouse inserts are failing")
			}
			return nil
		})
	}

	metricsMux := http.NewServeMux()
	metricsMux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg, EnableOpenMetrics: false}))
	apiMux := http.NewServeMux()
	apiMux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	apiMux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		for _, check := range d.ready {
			if err := check(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})

	g, gctx := errgroup.WithContext(ctx)
	for _, l := range []struct {
		name, addr string
		h          http.Handler
	}{{"metrics", cfg.Metrics.Listen, metricsMux}, {"api", cfg.API.Listen, apiMux}} {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			return fmt.Errorf("%s listener %s: %w", l.name, l.addr, err)
		}
		srv := &http.Server{Handler: l.h, ReadHeaderTimeout: 10 * time.Second}
		log.Info("listening", "component", l.name, "addr", ln.Addr().String())
		g.Go(func() error {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("%s server: %w", l.name, err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
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
