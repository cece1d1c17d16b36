package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/limiter"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestLifecycle runs the whole daemon in this process against real NATS
// and ClickHouse: it ingests events, shows them in /metrics, follows a
// manual decision into the live view and the throttled gauge without
// polling, stops on cancel, and leaves no goroutine behind.
func TestLifecycle(t *testing.T) {
	ch, db := testenv.ClickHouse(t)
	// Every goroutine from here on must be gone at the end: the daemon's,
	// and the embedded NATS server's once it is shut down.
	ignore := goleak.IgnoreCurrent()
	ns := testenv.NATS(t)
	keyFile := filepath.Join(t.TempDir(), "decisions.key")
	if _, err := WriteSigningKey(keyFile); err != nil {
		t.Fatal(err)
	}
	apiAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg := DefaultConfig()
	cfg.NATS.URL = ns.URL
	cfg.ClickHouse.Addr, cfg.ClickHouse.Database = []string{ch.Addr}, db
	cfg.API.Listen, cfg.Metrics.Listen = apiAddr, metricsAddr
	cfg.Decisions.SigningKeyFile = keyFile
	cfg.Collector.BatchMaxWait = 100 * time.Millisecond

	started := make(chan *Daemon, 1)
	d, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Started: func(d *Daemon) { started <- d }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("Run ended before the stages started: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("the stages did not start within 2m")
	}

	nc, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	for i := range 50 {
		e := event.Event{ID: fmt.Sprintf("e%d", i), TenantID: "acme", Kind: event.KindAPIRequest, Time: time.Now().UTC(), Quantity: 1, LatencyMs: 5}
		m := nats.NewMsg(event.Subject(e.TenantID, e.Kind))
		m.Data = event.AppendJSON(nil, &e)
		m.Header.Set(event.HeaderMsgID, e.ID)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	testenv.Eventually(t, 30*time.Second, "50 events in /metrics", func() bool {
		return strings.Contains(get(t, client, "http://"+metricsAddr+"/metrics"), `tenantguard_tenant_events_total{kind="api_request",tenant="acme"} 50`)
	})

	signer, err := limiter.LoadSigner(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := NewDecisionsPublisher(ctx, nc, cfg.Decisions.Config, signer)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if _, err := pub.Put(ctx, limiter.Decision{TenantID: "acme", Scope: limiter.ScopeAll, Action: limiter.ActionThrottle,
		RatePerSec: 7, Burst: 7, IssuedAt: now, ExpiresAt: now.Add(time.Hour), Reason: "test", Source: limiter.SourceManual}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the decision in the live view and the gauge", func() bool {
		return strings.HasPrefix(d.Status("acme"), "THROTTLED 7/s") &&
			strings.Contains(get(t, client, "http://"+metricsAddr+"/metrics"), `tenantguard_tenant_throttled{tenant="acme"} 1`)
	})
	nc.Close()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30s of cancel")
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ns.Shutdown()
	goleak.VerifyNone(t, ignore)
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
