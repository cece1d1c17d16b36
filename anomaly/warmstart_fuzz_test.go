package anomaly

import (
	"context"
	"math"
	"testing"
	"time"
)

// FuzzWarmStartRows drives arbitrary stored rows (any numbers, any minute)
// through what warm start does with them: the hourly profile seed, the
// minute replay, month-to-date spend, then live evaluation. Nothing may
// panic, and every alert must carry finite numbers.
func FuzzWarmStartRows(f *testing.F) {
	f.Add("acme", int64(0), uint64(10), 10.0, 0.5, 12.0, uint64(10), uint64(0), 600.0, 50.0)
	f.Add("t", int64(3), uint64(1), 1e308, 1e300, math.Inf(1), uint64(1), uint64(1), math.Inf(1), math.NaN())
	f.Add("t", int64(-100000), uint64(math.MaxUint64), math.NaN(), -1.0, math.MaxFloat64, uint64(math.MaxUint64), uint64(math.MaxUint64), -5.0, math.Inf(-1))
	f.Fuzz(func(t *testing.T, tenant string, minuteOff int64, count uint64, qty, cost, lat float64, latN, errs uint64, hourTotal, spend float64) {
		rec := &Recorder{}
		cfg := DefaultConfig()
		cfg.SpendCaps = map[string]float64{DefaultPlan: 100}
		d, err := New(cfg, rec)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		now := time.Date(2026, 3, 20, 12, 0, 0, 0, time.UTC)
		minute := now.Add(time.Duration(minuteOff%(1<<20)) * time.Minute)
		d.seedHour(tenant, int32(now.Unix()/3600)-2, hourTotal, int32(now.Unix()/60)-121)
		r := Rollup{Minute: minute, TenantID: tenant, Kind: "ai_tokens", Count: count, Quantity: qty,
			Errors: errs, Cost: cost, LatencyP95: lat, LatencyCount: latN}
		_ = r.Check()
		d.ObserveRollup(&r)
		d.Advance(ctx, minute.Add(time.Minute+cfg.Lateness))
		d.SetSpend(tenant, now, spend, spend/100)
		for i := range 3 {
			m := now.Add(time.Duration(i) * time.Minute)
			d.ObserveRollup(&Rollup{Minute: m, TenantID: tenant, Kind: "ai_tokens", Count: 100, Quantity: 100, Cost: 1, LatencyP95: 20, LatencyCount: 100})
			d.Advance(ctx, m.Add(time.Minute+cfg.Lateness))
		}
		for _, a := range rec.Alerts() {
			for _, v := range []float64{a.Observed, a.Baseline, a.Ratio} {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					t.Fatalf("alert %s %s carries a non-finite number: %+v", a.TenantID, a.Metric, a)
				}
			}
		}
	})
}
