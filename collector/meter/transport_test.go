package meter_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/meter"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/limiter"
)

// flaky is a third-party API: it counts the calls that reach it and, while
// failing, answers every other call with 502.
type flaky struct {
	*httptest.Server
	hits    atomic.Int64
	failing atomic.Bool
}

func newFlaky(t *testing.T) *flaky {
	f := &flaky{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n := f.hits.Add(1); f.failing.Load() && n%2 == 1 {
			http.Error(w, "upstream down", http.StatusBadGateway)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

// call makes one outbound call for tenant and returns its error and time.
func call(t *testing.T, c *http.Client, url, tenant string) (int, error, time.Duration) {
	t.Helper()
	ctx := event.WithIdentity(context.Background(), event.Identity{Tenant: tenant})
	req, err := http.NewRequestWithContext(ctx, "POST", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, err := c.Do(req)
	d := time.Since(start)
	if err != nil {
		return 0, err, d
	}
	resp.Body.Close()
	return resp.StatusCode, nil, d
}

// TestFailingIntegrationOpensBreakerAndIsAlerted: an integration that
// starts failing half its calls opens the tenant's breaker; further calls
// fail fast without reaching it; every call is stored as a webhook_call
// event; and the anomaly detector, fed the stored events, alerts the
// integration's error spike.
func TestFailingIntegrationOpensBreakerAndIsAlerted(t *testing.T) {
	r := newRig(t)
	// A 1 s error window (default 10 s), so the healthy calls have left it
	// when the failures start.
	lim := r.limiter(t, func(c *limiter.Config) { c.Breaker.Window = time.Second })
	m := r.meter(t, testConfig(), lim)
	api := newFlaky(t)
	client := &http.Client{Transport: m.Transport("payments", nil)}

	const healthy = 60
	for range healthy {
		if code, err, _ := call(t, client, api.URL, "acme"); err != nil || code != 200 {
			t.Fatalf("healthy call: %d %v", code, err)
		}
	}
	time.Sleep(1100 * time.Millisecond)
	api.failing.Store(true)
	failing := 0
	for lim.Breakers().State("acme", "payments") != limiter.StateOpen {
		if failing++; failing > 100 {
			t.Fatal("the breaker did not open after 100 calls failing half the time")
		}
		call(t, client, api.URL, "acme")
	}
	// Default breaker: at least 20 calls in the window, errors/calls >= 0.5.
	if failing < 20 || failing > 30 {
		t.Errorf("breaker opened after %d calls at 50%% errors, want 20..30", failing)
	}
	hits := api.hits.Load()
	const fast = 30
	for range fast {
		_, err, d := call(t, client, api.URL, "acme")
		var coe *limiter.CircuitOpenError
		if !errors.As(err, &coe) || coe.Forced {
			t.Fatalf("call with the breaker open: %v, want a local *limiter.CircuitOpenError", err)
		}
		if d > 50*time.Millisecond {
			t.Fatalf("a rejected call took %s, want it to fail fast", d)
		}
	}
	if got := api.hits.Load(); got != hits {
		t.Fatalf("%d calls reached the integration with the breaker open", got-hits)
	}
	if code, err, _ := call(t, client, api.URL, "globex"); err != nil || code == 0 {
		t.Fatalf("another tenant's call: %v, want it to reach the integration", err)
	}

	evs := r.stored(t, "acme", event.KindWebhookCall, healthy+failing+fast)
	rejected, errs := 0, 0
	for _, e := range evs {
		if e.Attrs["integration"] != "payments" || e.Route != "payments" {
			t.Fatalf("event %+v, want integration payments", e)
		}
		if e.Error {
			errs++
		}
		if e.Attrs["rejected"] == "circuit_open" {
			rejected++
		}
	}
	// Rejected calls are not the integration's errors.
	if rejected != fast || errs != failing/2+failing%2 {
		t.Fatalf("stored %d rejected and %d errors, want %d rejected and %d errors", rejected, errs, fast, failing/2+failing%2)
	}

	// The detector learns the healthy minute, then sees the failing one.
	acfg := anomaly.DefaultConfig()
	acfg.WarmupWindows = 10
	rep, err := anomaly.NewReplayer(acfg)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now().UTC().Truncate(time.Minute).Add(-time.Hour)
	feed := func(minute int, evs []storedEvent) {
		for i, s := range evs {
			e := event.Event{ID: "x", TenantID: s.Tenant, Kind: s.Kind, Quantity: 1, Route: s.Route,
				LatencyMs: s.LatencyMs, StatusCode: int(s.Status), Error: s.Error, Attrs: s.Attrs,
				Time: base.Add(time.Duration(minute)*time.Minute + time.Duration(i)*time.Minute/time.Duration(len(evs)))}
			rep.Event(&e, 0)
		}
	}
	minute := 0
	for ; minute < 20; minute++ {
		feed(minute, evs[:healthy])
	}
	spikeStart := base.Add(time.Duration(minute) * time.Minute)
	for range 3 {
		feed(minute, evs[healthy:])
		minute++
	}
	var alert *anomaly.Episode
	for _, ep := range rep.Finish(0) {
		if ep.TenantID == "acme" && ep.Metric == anomaly.MetricErrorRate && ep.Integration == "payments" {
			alert = &ep
			break
		}
	}
	if alert == nil {
		t.Fatal("the detector raised no error_rate alert for integration payments")
	}
	if alert.StartsAt.Before(spikeStart) {
		t.Fatalf("alert starts %s, before the failures (%s)", alert.StartsAt, spikeStart)
	}
	t.Logf("breaker opened after %d calls; alert: observed %.2f vs baseline %.3f", failing, alert.Observed, alert.Baseline)
}

// TestTransportHonoursPushedOpenCircuit: an open_circuit decision pushed
// through the KV bucket makes the tenant's calls fail fast until it is
// cleared; other tenants' calls go through.
func TestTransportHonoursPushedOpenCircuit(t *testing.T) {
	r := newRig(t)
	lim := r.limiter(t, nil)
	m := r.meter(t, testConfig(), lim)
	api := newFlaky(t)
	client := &http.Client{Transport: m.Transport("llm", nil)}
	pub := r.publisher(t)
	now := time.Now()
	if _, err := pub.Put(context.Background(), limiter.Decision{TenantID: "acme", Scope: limiter.IntegrationScope("llm"),
		Action: limiter.ActionOpenCircuit, IssuedAt: now, ExpiresAt: now.Add(time.Minute), Reason: "error spike",
		Source: limiter.SourceAnomaly}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the decision reaches the limiter", func() bool {
		return lim.Breakers().State("acme", "llm") == limiter.StateOpen
	})
	_, err, _ := call(t, client, api.URL, "acme")
	var coe *limiter.CircuitOpenError
	if !errors.As(err, &coe) || !coe.Forced || coe.RetryAfter <= 0 {
		t.Fatalf("got %v, want a decision-forced *limiter.CircuitOpenError", err)
	}
	if api.hits.Load() != 0 {
		t.Fatal("a call reached the integration through an open circuit")
	}
	if code, err, _ := call(t, client, api.URL, "globex"); err != nil || code != 200 {
		t.Fatalf("other tenant: %d %v, want 200", code, err)
	}
	if err := pub.Clear(context.Background(), "acme", limiter.IntegrationScope("llm"), limiter.SourceManual); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the clear reaches the limiter", func() bool {
		return lim.Breakers().State("acme", "llm") == limiter.StateClosed
	})
	if code, err, _ := call(t, client, api.URL, "acme"); err != nil || code != 200 {
		t.Fatalf("after clear: %d %v, want 200", code, err)
	}
	evs := r.stored(t, "acme", event.KindWebhookCall, 2)
	if evs[0].Attrs["rejected"] != "circuit_open" || evs[0].Error || evs[1].Status != 200 || evs[1].Attrs["rejected"] != "" {
		t.Fatalf("events %+v, want a rejected call then a passed one", evs)
	}
}

// TestTransportWithoutTenant: a call whose context names no tenant goes
// through unguarded and unmetered, and is counted; an invalid integration
// name fails every call with a clear error.
func TestTransportWithoutTenant(t *testing.T) {
	r := newRig(t)
	reg := prometheus.NewPedanticRegistry()
	cfg := testConfig()
	cfg.Outbound.Kind = "llm_call"
	m, err := meter.New(cfg, meter.Deps{Emitter: r.em, Registerer: reg, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	api := newFlaky(t)
	resp, err := (&http.Client{Transport: m.Transport("llm", nil)}).Post(api.URL, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if api.hits.Load() != 1 {
		t.Fatal("the untenanted call did not go through")
	}
	found := false
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "tenantguard_meter_untenanted_total" {
			for _, mm := range mf.GetMetric() {
				if mm.GetLabel()[0].GetValue() == "llm_call" && mm.GetCounter().GetValue() == 1 {
					found = true
				}
			}
		}
	}
	if !found {
		t.Fatal(`tenantguard_meter_untenanted_total{kind="llm_call"} is not 1`)
	}
	_, err, _ = call(t, &http.Client{Transport: m.Transport("bad\x01name", nil)}, api.URL, "acme")
	if err == nil || api.hits.Load() != 1 {
		t.Fatalf("invalid integration name: %v, want an error and no call", err)
	}
}
