package dashboards

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/anomaly/decide"
	"github.com/tenantguard/tenantguard/anomaly/notify"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/limiter"
)

// startGuard runs on reg what the daemon's guard registers there: the
// decision engine, publishing signed decisions to a real KV bucket (one
// throttle issued, one suppressed by a manual decision), and the alert
// fan-out, delivering to a webhook that answers 200 and an Alertmanager
// that answers 500, an alert a second until ctx ends.
func startGuard(ctx context.Context, t *testing.T, reg prometheus.Registerer) {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	nc, err := nats.Connect(testenv.NATS(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := limiter.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	if js, err := jetstream.New(nc); err != nil {
		t.Fatal(err)
	} else if _, err := limiter.EnsureBuckets(ctx, js, 1, 0); err != nil { // as the daemon does
		t.Fatal(err)
	}
	pub, err := limiter.NewPublisher(ctx, nc, limiter.WithSigner(signer))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := decide.New(decide.DefaultConfig(), decide.Deps{Publisher: pub, Registerer: reg, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	if _, err := pub.Put(ctx, limiter.Decision{TenantID: "globex", Scope: limiter.ScopeAll, Action: limiter.ActionThrottle,
		RatePerSec: 50, IssuedAt: now, ExpiresAt: now.Add(time.Hour), Reason: "incident", Source: limiter.SourceManual}); err != nil {
		t.Fatal(err)
	}
	spike := func(tenant string) anomaly.Alert {
		start := now.Truncate(time.Minute)
		return anomaly.Alert{TenantID: tenant, Metric: anomaly.MetricUsage, Kind: "api_request", Status: anomaly.StatusFiring,
			Severity: anomaly.SeverityCritical, Observed: 3000, Baseline: 600, Ratio: 5, StartsAt: start,
			Fingerprint: anomaly.Fingerprint(tenant, anomaly.MetricUsage, "api_request", "", start),
			Summary:     "tenant " + tenant + ": usage of api_request at 5.0x baseline (3000 vs 600)"}
	}
	for _, tenant := range []string{"acme", "globex"} {
		if err := eng.Handle(ctx, spike(tenant)); err != nil && !errors.Is(err, limiter.ErrManualOverride) {
			t.Fatal(err)
		}
	}

	ok := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(ok.Close)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(down.Close)
	cfg := notify.DefaultConfig()
	cfg.Webhook.URL, cfg.Webhook.Secret = ok.URL, "dashboards-test-secret"
	cfg.Alertmanager.URLs = []string{down.URL}
	cfg.Alertmanager.MaxRetries, cfg.Alertmanager.RetryBackoff = 1, 10*time.Millisecond
	cfg.NATS.Enabled, cfg.ClickHouse.Enabled = false, false
	fan, err := notify.New(cfg, notify.Deps{Registerer: reg, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = fan.Run(ctx) }()
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			fan.Send(ctx, spike("acme"))
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { fan.Close() })
}
