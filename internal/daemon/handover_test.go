package daemon

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/anomaly/decide"
	"github.com/tenantguard/tenantguard/anomaly/notify"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/exporter/metrics"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
	"github.com/tenantguard/tenantguard/limiter"
)

// testReplica is the per-tenant part of one `tenantguard run` replica:
// detector, decision engine, gauges and alert view, wired as the daemon
// wires them (alerts go to the anomalies table, the view and the engine),
// and the handover that moves tenants in and out of it.
type testReplica struct {
	det *anomaly.Detector
	eng *decide.Engine
	m   *metrics.Metrics
	reg *prometheus.Registry
	ho  *handover
}

func newTestReplica(t *testing.T, st *store.Store, url string, signer *limiter.Signer) *testReplica {
	t.Helper()
	ctx := context.Background()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if js, err := jetstream.New(nc); err != nil {
		t.Fatal(err)
	} else if _, err := limiter.EnsureBuckets(ctx, js, 1, 0); err != nil { // as the daemon does
		t.Fatal(err)
	}
	pub, err := limiter.NewPublisher(ctx, nc, limiter.WithSigner(signer))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := &testReplica{reg: prometheus.NewRegistry()}
	if r.eng, err = decide.New(decide.DefaultConfig(), decide.Deps{Publisher: pub, Logger: log}); err != nil {
		t.Fatal(err)
	}
	if r.m, err = metrics.New(metrics.DefaultConfig(), r.reg); err != nil {
		t.Fatal(err)
	}
	view := &guardView{gauges: r.m}
	ch := notify.NewClickHouse(st, notify.ClickHouseConfig{Enabled: true})
	r.det, err = anomaly.New(anomaly.DefaultConfig(), anomaly.SinkFunc(func(ctx context.Context, a anomaly.Alert) {
		if _, err := ch.Notify(ctx, []anomaly.Alert{a}); err != nil {
			t.Errorf("record alert: %v", err)
		}
		view.Send(ctx, a)
		if err := r.eng.Handle(ctx, a); err != nil {
			t.Errorf("decide: %v", err)
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	r.ho = &handover{det: r.det, src: st, eng: r.eng, gauges: r.m, view: view, log: log}
	return r
}

// activeAnomalies sums tenantguard_tenant_active_anomalies over tenants.
func (r *testReplica) activeAnomalies(t *testing.T) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == "tenantguard_tenant_active_anomalies" {
			for _, m := range mf.Metric {
				n += m.GetGauge().GetValue()
			}
		}
	}
	return n
}

// traffic stores n api_request events a minute of tenant in usage_1m for
// the minutes in [from, to) and, when r is not nil, shows them to r's
// detector minute by minute.
func traffic(t *testing.T, st *store.Store, r *testReplica, tenant string, from, to time.Time, n uint64) {
	t.Helper()
	ctx := context.Background()
	b, err := st.Conn().PrepareBatch(ctx, "INSERT INTO "+st.Table("usage_1m")+" (tenant_id, kind, minute, count, quantity, cost, errors, latency_count)")
	if err != nil {
		t.Fatal(err)
	}
	var hourly []store.HourlyCount
	for m := from; m.Before(to); m = m.Add(time.Minute) {
		if err := b.Append(tenant, "api_request", m, n, float64(n), decimal.Zero, uint64(0), uint64(0)); err != nil {
			b.Abort()
			t.Fatal(err)
		}
		hourly = append(hourly, store.HourlyCount{TenantID: tenant, Hour: m, Count: n})
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	teststore.Hourly(t, st, hourly)
	if r == nil {
		return
	}
	for m := from; m.Before(to); m = m.Add(time.Minute) {
		r.det.ObserveRollup(&anomaly.Rollup{Minute: m, TenantID: tenant, Kind: "api_request", Count: n, Quantity: float64(n)})
		r.det.Advance(ctx, m.Add(time.Minute+17*time.Second))
	}
}

// TestHandoverMovesTenantState moves a tenant whose usage spike is being
// throttled from replica a to replica b: b continues the episode, adopts
// and later clears the throttle when the episode resolves; a drops the
// tenant without resolving or clearing anything, and exports no gauge of
// it. A live decision whose episode no longer runs is cleared at the
// handover instead of being renewed for good.
func TestHandoverMovesTenantState(t *testing.T) {
	srv, db := testenv.ClickHouse(t)
	st := teststore.On(t, srv, db)
	ns := testenv.NATS(t)
	signer, err := limiter.NewSigner(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, b := newTestReplica(t, st, ns.URL, signer), newTestReplica(t, st, ns.URL, signer)
	nc, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	pub, err := limiter.NewPublisher(ctx, nc, limiter.WithSigner(signer))
	if err != nil {
		t.Fatal(err)
	}

	now := time.Now().UTC().Truncate(time.Minute).Add(-30 * time.Minute)
	traffic(t, st, nil, "acme", now.Add(-3*time.Hour), now, 100)
	a.ho.now = func() time.Time { return now }
	b.ho.now = func() time.Time { return now }
	if err := a.ho.Owned(ctx, func(string) bool { return true }, true); err != nil {
		t.Fatal(err)
	}
	if err := b.ho.Owned(ctx, func(string) bool { return false }, false); err != nil {
		t.Fatal(err)
	}

	// A 6x spike on a: an episode, and a throttle.
	traffic(t, st, a, "acme", now, now.Add(3*time.Minute), 600)
	thr, err := pub.Get(ctx, "acme", limiter.ScopeAll)
	if err != nil || thr.Action != limiter.ActionThrottle {
		t.Fatalf("acme's decision after the spike: got %+v, %v; want a throttle", thr, err)
	}
	if got := a.activeAnomalies(t); got != 1 {
		t.Fatalf("a's active anomalies: got %v, want 1", got)
	}
	// A throttle of another tenant whose episode ended while no owner ran.
	issued := time.Now().UTC().Truncate(time.Second)
	if _, err := pub.Put(ctx, limiter.Decision{TenantID: "gamma", Scope: limiter.ScopeAll, Action: limiter.ActionThrottle,
		RatePerSec: 5, Burst: 10, IssuedAt: issued, ExpiresAt: issued.Add(time.Minute), Reason: "spike",
		Source: limiter.SourceAnomaly, AnomalyID: "0123456789abcdef"}); err != nil {
		t.Fatal(err)
	}

	// acme and gamma move to b.
	now = now.Add(3*time.Minute + 30*time.Second)
	moved := func(id string) bool { return id == "acme" || id == "gamma" }
	if err := a.ho.Owned(ctx, func(id string) bool { return !moved(id) }, false); err != nil {
		t.Fatal(err)
	}
	if err := b.ho.Owned(ctx, moved, true); err != nil {
		t.Fatal(err)
	}
	if d, err := pub.Get(ctx, "acme", limiter.ScopeAll); err != nil || d.Action != limiter.ActionThrottle || d.AnomalyID != thr.AnomalyID {
		t.Errorf("acme's throttle after the move: got %+v, %v; want a's throttle, still live", d, err)
	}
	if d, err := pub.Get(ctx, "gamma", limiter.ScopeAll); err == nil {
		t.Errorf("gamma's orphaned throttle: got %+v, want it cleared", d)
	}
	if ga, gb := a.activeAnomalies(t), b.activeAnomalies(t); ga != 0 || gb != 1 {
		t.Errorf("active anomalies: got a %v, b %v; want 0 and 1", ga, gb)
	}
	if n := len(a.eng.Active()); n != 0 {
		t.Errorf("a holds %d decisions, want 0", n)
	}
	if n := len(b.eng.Active()); n != 1 {
		t.Errorf("b holds %d decisions, want 1", n)
	}

	// Back to normal on b: the episode resolves there, and b clears the
	// throttle.
	traffic(t, st, b, "acme", now.Truncate(time.Minute), now.Add(15*time.Minute), 100)
	if d, err := pub.Get(ctx, "acme", limiter.ScopeAll); err == nil {
		t.Errorf("acme's decision after the episode resolved: got %+v, want it cleared", d)
	}
	if gb := b.activeAnomalies(t); gb != 0 {
		t.Errorf("b's active anomalies after the resolution: got %v, want 0", gb)
	}
	episodes, err := st.LatestAnomalies(ctx, []string{anomaly.MetricUsage}, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(episodes) != 1 || episodes[0].Status != string(anomaly.StatusResolved) || episodes[0].Fingerprint != thr.AnomalyID {
		t.Errorf("recorded usage episodes %+v, want one, resolved, of fingerprint %s", episodes, thr.AnomalyID)
	}
}
