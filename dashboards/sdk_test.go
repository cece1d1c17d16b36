package dashboards

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tenantguard/tenantguard/collector"
	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/meter"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/limiter"
)

// startSDKService runs the service SDK as a service embeds it, with the
// real emitter (on an embedded NATS), limiter and meter registered on the
// service's own registry, sends it traffic (some tenants throttled, one
// integration's circuit forced open, another opened by failures) until the
// test ends, and serves the registry. It returns the /metrics address.
func startSDKService(t *testing.T) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	srv := testenv.NATS(t)
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if err := collector.EnsureStreams(context.Background(), js, collector.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	em, err := emit.New(nc, emit.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := em.Register(reg); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	lcfg := limiter.DefaultConfig()
	lcfg.Group = "dashboards-test"
	lcfg.Breaker.MinRequests = 5
	lim, err := limiter.New(lcfg, limiter.Deps{Registerer: reg, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, d := range []limiter.Decision{
		{TenantID: "acme", Scope: limiter.ScopeAll, Action: limiter.ActionThrottle, RatePerSec: 5, Burst: 5},
		{TenantID: "globex", Scope: limiter.IntegrationScope("payments"), Action: limiter.ActionOpenCircuit},
		{TenantID: "hooli", Scope: limiter.ScopeAll, Action: limiter.ActionThrottle, RatePerSec: 1, Burst: 1, Mode: limiter.ModeShadow},
	} {
		d.IssuedAt, d.ExpiresAt, d.Source = now, now.Add(time.Hour), limiter.SourceManual
		if err := lim.Apply(d); err != nil {
			t.Fatal(err)
		}
	}
	for range 5 {
		_ = lim.Do(context.Background(), "initech", "mailer", func(context.Context) error { return errors.New("down") })
	}
	mcfg := meter.DefaultConfig()
	mcfg.Service = "dashboards-test"
	mcfg.HTTP.Tenant = limiter.HeaderTenant("X-Tenant-ID")
	mcfg.HTTP.Integration = func(r *http.Request) string {
		if strings.HasPrefix(r.URL.Path, "/pay") {
			return "payments"
		}
		return ""
	}
	m, err := meter.New(mcfg, meter.Deps{Emitter: em, Limiter: lim, Registerer: reg, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/invoices", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("POST /pay", func(w http.ResponseWriter, r *http.Request) {})
	h := m.Handler(mux)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, tn := range []string{"acme", "acme", "acme", "globex", "initech", "hooli", ""} {
				req := httptest.NewRequest("GET", "/v1/invoices", nil)
				if tn == "globex" {
					req = httptest.NewRequest("POST", "/pay", nil)
				}
				if tn != "" {
					req.Header.Set("X-Tenant-ID", tn)
				}
				h.ServeHTTP(httptest.NewRecorder(), req)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}),
		ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		hs.Close()
		_ = m.Close(context.Background())
		_ = em.Close(context.Background())
		lim.Close()
	})
	return ln.Addr().String()
}
