package anomaly

import (
	"context"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// TestWarmStartFromClickHouse seeds usage_1m and anomalies in a real
// ClickHouse, warm-starts a detector from it, and checks that the restarted
// detector (1) knows the weekly profile and levels, so a spike alerts at
// once instead of after the cold warm-up, and (2) neither forgets the
// month's spend nor repeats a spend-cap alert sent before the restart.
func TestWarmStartFromClickHouse(t *testing.T) {
	srv, db := testenv.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st := teststore.On(t, srv, db)
	conn := st.Conn()

	now := time.Date(2026, 3, 20, 12, 0, 30, 0, time.UTC)
	start := now.Add(-8 * 24 * time.Hour).Truncate(time.Hour)
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".usage_1m (tenant_id, kind, minute, count, quantity, cost, errors, latency_count)")
	if err != nil {
		t.Fatal(err)
	}
	var hourly []store.HourlyCount
	for m := start; m.Before(now.Truncate(time.Minute)); m = m.Add(time.Minute) {
		n := uint64(100) // 6000/h, flat: the profile index is 1
		if m.Hour() >= 9 && m.Hour() < 17 {
			n = 200 // office hours
		}
		cost := 95.0 / float64(now.Truncate(time.Minute).Sub(start).Minutes()) // 95 this month
		if err := batch.Append("acme", "api_request", m, n, float64(n), decimal.NewFromFloat(cost), uint64(0), uint64(0)); err != nil {
			batch.Abort()
			t.Fatal(err)
		}
		hourly = append(hourly, store.HourlyCount{TenantID: "acme", Hour: m, Count: n})
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	teststore.Hourly(t, st, hourly)
	at := now.Add(-time.Hour)
	if err := st.InsertAnomalies(ctx, []store.AnomalyRow{{Fingerprint: "f", TenantID: "acme", Metric: MetricSpendCap,
		Status: "firing", Severity: "warning", Observed: 91, Baseline: 100, Ratio: 0.91, StartsAt: at,
		EndsAt: time.Unix(0, 0), Summary: "90%", UpdatedAt: at}}); err != nil {
		t.Fatal(err)
	}

	cfg := DefaultConfig()
	cfg.SpendCaps = map[string]float64{DefaultPlan: 100}
	rec := &Recorder{}
	d, err := New(cfg, rec)
	if err != nil {
		t.Fatal(err)
	}
	n, err := d.WarmStart(ctx, st, now)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("warm-started %d tenants, want 1", n)
	}
	if a := rec.Alerts(); len(a) != 0 {
		t.Fatalf("warm start sent %+v, want nothing", a[0])
	}
	sh := d.shard("acme")
	tn := sh.tenants["acme"]
	if tn.prof.mode != modeWeek {
		t.Errorf("profile mode %d after 8 days of history, want week", tn.prof.mode)
	}
	if got := tn.sp.spend; got < 94 || got > 96 {
		t.Errorf("month-to-date spend %.2f, want about 95", got)
	}
	if k := tn.kind("api_request", d); int(k.s.n) < cfg.WarmupWindows {
		t.Errorf("usage series learned %d windows, want >= %d (warm)", k.s.n, cfg.WarmupWindows)
	}

	// Live again: a 3x spike at 12:01 alerts within 3 windows; spend reaches
	// 100% once (90% was alerted before the restart).
	base := now.Truncate(time.Minute)
	for i := 0; i < 5; i++ {
		m := base.Add(time.Duration(i) * time.Minute)
		d.ObserveRollup(&Rollup{Minute: m, TenantID: "acme", Kind: "api_request", Count: 600, Quantity: 600, Cost: 2})
		d.Advance(ctx, m.Add(time.Minute+cfg.Lateness))
	}
	var usage, caps []Alert
	for _, a := range rec.Alerts() {
		switch a.Metric {
		case MetricUsage:
			usage = append(usage, a)
		case MetricSpendCap:
			caps = append(caps, a)
		}
	}
	if len(usage) != 1 || usage[0].Status != StatusFiring {
		t.Errorf("usage alerts %+v, want one firing within 5 minutes of warm start", usage)
	}
	if len(caps) != 1 || caps[0].Labels["threshold"] != "100" {
		t.Errorf("spend-cap alerts %+v, want only the 100%% one", caps)
	}
}

// TestWarmStartSkipsNonFiniteRows stores what a release without numeric
// bounds let through (latency_ms 1e308, whose Float32 rollup is +Inf, and two
// 1e308 quantities in one minute, which sum to +Inf) beside a healthy tenant.
// Warm start must neither crash nor fail: it skips the poisoned rows and
// still warms the healthy tenant.
func TestWarmStartSkipsNonFiniteRows(t *testing.T) {
	srv, db := testenv.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st := teststore.On(t, srv, db)
	now := time.Now().UTC()
	at := now.Add(-30 * time.Minute).Truncate(time.Minute)
	b, err := st.Conn().PrepareBatch(ctx, "INSERT INTO "+db+".events (tenant_id, kind, time, id, quantity, latency_ms)")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		tenant, kind, id string
		qty, lat         float64
	}{
		{"poison", "webhook_call", "p1", 1, 1e308},
		{"poison", "api_request", "p2", 1e308, 5},
		{"poison", "api_request", "p3", 1e308, 5},
		{"good", "api_request", "g1", 1, 12},
	} {
		if err := b.Append(r.tenant, r.kind, at, r.id, r.qty, r.lat); err != nil {
			_ = b.Abort()
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	d, _ := newTestDetector(t, nil)
	n, err := d.WarmStart(ctx, st, now)
	if err != nil {
		t.Fatalf("warm start: %v", err)
	}
	if _, ok := d.shard("good").tenants["good"]; !ok || n < 1 {
		t.Errorf("warm start seeded %d tenants without the healthy one", n)
	}
	var seen int
	skipped, firstBad, err := QueryRollups(ctx, st, at, now, func(*Rollup) error { seen++; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if skipped != 2 || seen != 1 || firstBad == nil {
		t.Errorf("QueryRollups: got %d skipped, %d passed, first %v; want 2 skipped (both poisoned rows), 1 passed", skipped, seen, firstBad)
	}
}
