package anomaly

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/tenantguard/tenantguard/collector/store"
)

// RollupReader reads usage_1m rollups; *store.Store is one.
type RollupReader interface {
	Rollups(ctx context.Context, from, to time.Time, fn func(store.UsageRow) error) error
}

// WarmStartReader is what WarmStart and Handover read; *store.Store is
// one.
type WarmStartReader interface {
	RollupReader
	// HourlyCounts gives each tenant's hourly event counts in [from, to).
	HourlyCounts(ctx context.Context, from, to time.Time, fn func(store.HourlyCount) error) error
	// SpendSince gives each tenant's cost from since on.
	SpendSince(ctx context.Context, since time.Time) (map[string]float64, error)
	// LatestAnomalies gives the latest recorded state of each episode of
	// metrics started from since on.
	LatestAnomalies(ctx context.Context, metrics []string, since time.Time) ([]store.AnomalyRow, error)
}

var _ WarmStartReader = (*store.Store)(nil)

// QueryRollups reads usage_1m rollups with minute in [from, to), in minute
// order, and calls fn for each. A row that fails Rollup.Check (a non-finite
// sum, stored before events were bounded) is not passed to fn: it is counted
// in skipped, and the first one is described in firstBad, so the caller can
// report it.
func QueryRollups(ctx context.Context, src RollupReader, from, to time.Time, fn func(*Rollup) error) (skipped int, firstBad error, err error) {
	var r Rollup
	err = src.Rollups(ctx, from, to, func(u store.UsageRow) error {
		r = Rollup{Minute: u.Minute, TenantID: u.TenantID, Kind: u.Kind, Count: u.Count, Quantity: u.Quantity,
			Errors: u.Errors, Cost: u.Cost, LatencyP95: u.LatencyP95, LatencyCount: u.LatencyCount}
		if err := r.Check(); err != nil {
			if skipped == 0 {
				firstBad = err
			}
			skipped++
			return nil
		}
		return fn(&r)
	})
	return skipped, firstBad, err
}

// Check reports a rollup whose numbers no detector can use: a quantity,
// cost or latency that is negative, NaN, or beyond the float32 range the
// detector keeps its windows in. ObserveRollup ignores
// such a rollup; Check says why.
func (r *Rollup) Check() error {
	if r.usable() {
		return nil
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"quantity", r.Quantity}, {"cost", r.Cost}, {"latency_p95_ms", r.LatencyP95}} {
		if !finiteNonNeg(f.v) {
			return fmt.Errorf("usage_1m row %s %s at %s: %s is %v", r.TenantID, r.Kind, r.Minute.UTC().Format(time.RFC3339), f.name, f.v)
		}
	}
	return nil
}

func (r *Rollup) usable() bool {
	return finiteNonNeg(r.Quantity) && finiteNonNeg(r.Cost) && finiteNonNeg(r.LatencyP95)
}

func finiteNonNeg(v float64) bool { return v >= 0 && v <= math.MaxFloat32 }

// WarmStart loads baselines from the store (src) so a restart does not start
// cold: the seasonal profiles from hourly totals over warm_start.history,
// levels and dispersion by replaying warm_start.recent of minute rollups
// silently (no alerts), month-to-date spend, and from the anomalies table
// the spend-cap thresholds already alerted and the open episodes, which
// continue under their fingerprints. It is Handover for a detector that
// owns every tenant. Call it before Run and before the collector starts
// observing. It returns the number of tenants seeded.
func (d *Detector) WarmStart(ctx context.Context, src WarmStartReader, now time.Time) (int, error) {
	start := time.Now()
	h, err := d.Handover(ctx, src, func(string) bool { return true }, now)
	if err != nil {
		return 0, fmt.Errorf("warm start: %w", err)
	}
	d.log.Info("warm start done", "count", h.Adopted, "duration", time.Since(start))
	return h.Adopted, nil
}

// seedHour folds one historical hourly total into a tenant's profile.
// Hours must come in order per tenant; closed is the minute the tenant's
// windows are considered closed through if it is new.
func (d *Detector) seedHour(tenant string, hour int32, n float64, closed int32) {
	sh := d.shard(tenant)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.tenants[tenant]
	if t == nil {
		t = newTenant(tenant, d.lookupPlan(tenant), closed+1, closed)
		t.prof.hours, t.prof.acc = 0, 0
		sh.tenants[tenant] = t
	}
	pr := &t.prof
	if pr.hours > 0 && hour <= pr.seeded {
		return
	}
	// Hours without rows had no events.
	if pr.hours > 0 {
		for h := pr.seeded + 1; h < hour && h-pr.seeded < hoursPerWeek; h++ {
			pr.hour, pr.acc = h, 0
			pr.fold()
		}
	}
	pr.hour, pr.acc = hour, float32(n)
	pr.fold()
	pr.seeded = hour
	pr.hour = -1 // nothing accumulated yet: closeMinute must not fold again
	if nm := pr.nextMode(); nm != pr.mode {
		pr.mode = nm // levels are still empty: nothing to rescale
	}
}
