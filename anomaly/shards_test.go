package anomaly

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// TestWarmStartAndReplayReadEveryShard seeds eight days of usage_1m and a
// firing spend-cap episode for tenants spread over two shards, then warm
// starts a detector and reads the rollups a replay reads: through the
// Distributed tables every tenant is warm, with its month's spend and
// without repeating the alert, and the rollups come back whole and in
// minute order.
func TestWarmStartAndReplayReadEveryShard(t *testing.T) {
	st, c := teststore.Sharded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const tenants = 8
	now := time.Date(2026, 3, 20, 12, 0, 30, 0, time.UTC)
	start := now.Add(-8 * 24 * time.Hour).Truncate(time.Hour)
	end := now.Truncate(time.Minute)
	minutes := int(end.Sub(start).Minutes())
	batch, err := st.Conn().PrepareBatch(ctx, "INSERT INTO "+st.Table("usage_1m")+" (tenant_id, kind, minute, count, quantity, cost, errors, latency_count)")
	if err != nil {
		t.Fatal(err)
	}
	cost := decimal.NewFromFloat(95.0 / float64(minutes)) // 95 this month
	var hourly []store.HourlyCount
	for ti := 0; ti < tenants; ti++ {
		for m := start; m.Before(end); m = m.Add(time.Minute) {
			n := uint64(100)
			if m.Hour() >= 9 && m.Hour() < 17 {
				n = 200
			}
			if err := batch.Append(fmt.Sprintf("t%d", ti), "api_request", m, n, float64(n), cost, uint64(0), uint64(0)); err != nil {
				batch.Abort()
				t.Fatal(err)
			}
			hourly = append(hourly, store.HourlyCount{TenantID: fmt.Sprintf("t%d", ti), Hour: m, Count: n})
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	teststore.Hourly(t, st, hourly)
	at := now.Add(-time.Hour)
	var firing []store.AnomalyRow
	for ti := 0; ti < tenants; ti++ {
		firing = append(firing, store.AnomalyRow{Fingerprint: "f", TenantID: fmt.Sprintf("t%d", ti), Metric: MetricSpendCap,
			Status: "firing", Severity: "warning", Observed: 91, Baseline: 100, Ratio: 0.91, StartsAt: at,
			EndsAt: time.Unix(0, 0), Summary: "90%", UpdatedAt: at})
	}
	if err := st.InsertAnomalies(ctx, firing); err != nil {
		t.Fatal(err)
	}
	for i, s := range c.Shards {
		var n uint64
		if err := s.Conn(t, "default").QueryRow(ctx, "SELECT uniqExact(tenant_id) FROM "+st.Table("usage_1m_local")).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 || n == tenants {
			t.Fatalf("shard %d holds rollups of %d tenants; want the tenants spread over both", i+1, n)
		}
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
	if n != tenants {
		t.Fatalf("warm-started %d tenants, want %d", n, tenants)
	}
	if a := rec.Alerts(); len(a) != 0 {
		t.Fatalf("warm start sent %+v, want nothing", a[0])
	}
	for ti := 0; ti < tenants; ti++ {
		tenant := fmt.Sprintf("t%d", ti)
		tn := d.shard(tenant).tenants[tenant]
		if tn == nil {
			t.Errorf("%s: not warm-started", tenant)
			continue
		}
		if tn.prof.mode != modeWeek {
			t.Errorf("%s: profile mode %d after 8 days of history, want week", tenant, tn.prof.mode)
		}
		if got := tn.sp.spend; got < 94 || got > 96 {
			t.Errorf("%s: month-to-date spend %.2f, want about 95", tenant, got)
		}
	}

	// What `replay --from-clickhouse` reads: a day of rollups.
	from := end.Add(-24 * time.Hour)
	per := map[string]int{}
	var last time.Time
	skipped, _, err := QueryRollups(ctx, st, from, end, func(r *Rollup) error {
		if r.Minute.Before(last) {
			return fmt.Errorf("rollup at %s after %s: want minute order", r.Minute, last)
		}
		last = r.Minute
		per[r.TenantID]++
		return nil
	})
	if err != nil || skipped != 0 {
		t.Fatalf("query rollups: skipped %d, %v", skipped, err)
	}
	for ti := 0; ti < tenants; ti++ {
		if got := per[fmt.Sprintf("t%d", ti)]; got != 24*60 {
			t.Errorf("t%d: got %d rollups for a day, want %d", ti, got, 24*60)
		}
	}
}
