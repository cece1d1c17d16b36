package decide

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/limiter"
)

// replica starts an engine on pub that runs until the end of t.
func replica(t *testing.T, pub *limiter.Publisher, mod func(*Config)) *Engine {
	t.Helper()
	cfg := DefaultConfig()
	cfg.TTL, cfg.RenewEvery = 3*time.Second, time.Second
	if mod != nil {
		mod(&cfg)
	}
	eng, err := New(cfg, Deps{Publisher: pub, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); eng.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return eng
}

func ownsOnly(tenant string) func(string) bool { return func(id string) bool { return id == tenant } }

func ownsAllBut(tenant string) func(string) bool { return func(id string) bool { return id != tenant } }

// TestHandoverAdoptsLiveDecision: replica a throttles a noisy tenant; the
// tenant moves to b. b adopts the live throttle and renews it as it was
// (same rate, same anomaly) past its TTL; a, no longer the owner, ignores
// the resolution; b clears the throttle when the episode resolves, and
// no key is duplicated or orphaned.
func TestHandoverAdoptsLiveDecision(t *testing.T) {
	_, _, pub, _ := servers(t)
	ctx := context.Background()
	a, b := replica(t, pub, nil), replica(t, pub, nil)
	if h, err := b.Handover(ctx, func(string) bool { return false }); err != nil || h.Adopted != 0 || h.Released != 0 {
		t.Fatalf("b owning nothing: got %+v, %v", h, err)
	}
	fire := alert("noisy", anomaly.MetricUsage, anomaly.StatusFiring, 600) // 600/min: 2 x 10/s
	other := alert("other", anomaly.MetricUsage, anomaly.StatusFiring, 300)
	a.Send(ctx, fire)
	a.Send(ctx, other)
	testenv.Eventually(t, 5*time.Second, "throttles in KV", func() bool {
		d1, err1 := pub.Get(ctx, "noisy", limiter.ScopeAll)
		d2, err2 := pub.Get(ctx, "other", limiter.ScopeAll)
		return err1 == nil && err2 == nil && d1.Action == limiter.ActionThrottle && d2.Action == limiter.ActionThrottle
	})
	issued, _ := pub.Get(ctx, "noisy", limiter.ScopeAll)

	ha, err := a.Handover(ctx, ownsAllBut("noisy"))
	if err != nil || ha.Released != 1 || ha.Adopted != 0 {
		t.Fatalf("a releasing noisy: got %+v, %v; want 1 released", ha, err)
	}
	hb, err := b.Handover(ctx, ownsOnly("noisy"))
	if err != nil || hb.Adopted != 1 || hb.Released != 0 {
		t.Fatalf("b taking noisy: got %+v, %v; want 1 adopted", hb, err)
	}
	if got := len(b.Active()); got != 1 {
		t.Errorf("b holds %d decisions, want 1", got)
	}

	// Two TTLs later the throttle is still live, renewed by b as it was.
	time.Sleep(2 * 3 * time.Second)
	d, err := pub.Get(ctx, "noisy", limiter.ScopeAll)
	if err != nil || !d.Live(time.Now()) || !d.ExpiresAt.After(issued.ExpiresAt) {
		t.Fatalf("noisy's throttle after 2 TTLs: got %+v, %v; want renewed past %s", d, err, issued.ExpiresAt)
	}
	if d.RatePerSec != 20 || d.AnomalyID != fire.Fingerprint || d.Source != limiter.SourceAnomaly {
		t.Errorf("renewed throttle: got rate %v, anomaly %s, source %s; want 20, %s, anomaly", d.RatePerSec, d.AnomalyID, d.Source, fire.Fingerprint)
	}
	if d, err := pub.Get(ctx, "other", limiter.ScopeAll); err != nil || !d.Live(time.Now()) {
		t.Errorf("a's other tenant: got %+v, %v; want still renewed by a", d, err)
	}

	res := fire
	res.Status, res.EndsAt = anomaly.StatusResolved, time.Now()
	res.Labels = map[string]string{} // a resolution need not call for a decision to clear one
	a.Send(ctx, res)                 // not a's any more
	time.Sleep(time.Second)
	if d, err := pub.Get(ctx, "noisy", limiter.ScopeAll); err != nil || d.Action != limiter.ActionThrottle {
		t.Fatalf("after the old owner got the resolution: got %+v, %v; want the throttle untouched", d, err)
	}
	b.Send(ctx, res)
	testenv.Eventually(t, 5*time.Second, "b clears it", func() bool {
		_, err := pub.Get(ctx, "noisy", limiter.ScopeAll)
		return err != nil
	})
	if got := len(b.Active()); got != 0 {
		t.Errorf("b holds %d decisions after the resolution, want 0", got)
	}
}

// TestHandoverReleasedNotRenewed: a replica that lets a tenant go stops
// renewing its throttle, and does not clear it either: left alone, it
// expires at its TTL.
func TestHandoverReleasedNotRenewed(t *testing.T) {
	_, _, pub, _ := servers(t)
	ctx := context.Background()
	a := replica(t, pub, nil)
	a.Send(ctx, alert("noisy", anomaly.MetricUsage, anomaly.StatusFiring, 600))
	testenv.Eventually(t, 5*time.Second, "throttle in KV", func() bool {
		d, err := pub.Get(ctx, "noisy", limiter.ScopeAll)
		return err == nil && d.Action == limiter.ActionThrottle
	})
	if h, err := a.Handover(ctx, ownsAllBut("noisy")); err != nil || h.Released != 1 {
		t.Fatalf("release: got %+v, %v; want 1 released", h, err)
	}
	if d, err := pub.Get(ctx, "noisy", limiter.ScopeAll); err != nil || !d.Live(time.Now()) {
		t.Fatalf("right after the release: got %+v, %v; want the throttle live", d, err)
	}
	time.Sleep(3*time.Second + 1500*time.Millisecond)
	d, err := pub.Get(ctx, "noisy", limiter.ScopeAll)
	if err != nil || d.Action != limiter.ActionThrottle || d.Live(time.Now()) {
		t.Fatalf("a TTL after the release: got %+v, %v; want the throttle expired, neither renewed nor cleared", d, err)
	}
	// A firing alert still queued for the released tenant starts nothing.
	a.Send(ctx, alert("noisy", anomaly.MetricUsage, anomaly.StatusFiring, 600))
	time.Sleep(time.Second)
	if got := len(a.Active()); got != 0 {
		t.Errorf("a holds %d decisions, want 0", got)
	}
}
