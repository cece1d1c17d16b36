package anomaly

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// QueryRollups reads usage_1m rollups with minute in [from, to), in minute
// order, and calls fn for each. A row that fails Rollup.Check (a non-finite
// sum, stored before events were bounded) is not passed to fn: it is counted
// in skipped, and the first one is described in firstBad, so the caller can
// report it.
func QueryRollups(ctx context.Context, conn driver.Conn, db string, from, to time.Time, fn func(*Rollup) error) (skipped int, firstBad error, err error) {
	if !identRE.MatchString(db) {
		return 0, nil, fmt.Errorf("invalid database name %q", db)
	}
	rows, err := conn.Query(ctx, `SELECT tenant_id, kind, minute, sum(count), sum(quantity), toFloat64(sum(cost)),
       sum(errors), sum(latency_count), quantilesTDigestMerge(0.5, 0.95, 0.99)(latency)
FROM `+db+`.usage_1m WHERE minute >= ? AND minute < ?
GROUP BY tenant_id, kind, minute ORDER BY minute, tenant_id, kind`, from.UTC(), to.UTC())
	if err != nil {
		return 0, nil, fmt.Errorf("query usage_1m: %w", err)
	}
	defer rows.Close()
	var r Rollup
	for rows.Next() {
		var q []float32
		r = Rollup{}
		if err := rows.Scan(&r.TenantID, &r.Kind, &r.Minute, &r.Count, &r.Quantity, &r.Cost, &r.Errors, &r.LatencyCount, &q); err != nil {
			return skipped, firstBad, fmt.Errorf("scan usage_1m: %w", err)
		}
		if r.LatencyCount > 0 && len(q) == 3 && !math.IsNaN(float64(q[1])) {
			r.LatencyP95 = float64(q[1])
		}
		if err := r.Check(); err != nil {
			if skipped == 0 {
				firstBad = err
			}
			skipped++
			continue
		}
		if err := fn(&r); err != nil {
			return skipped, firstBad, err
		}
	}
	return skipped, firstBad, rows.Err()
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

// WarmStart loads baselines from ClickHouse so a restart does not start
// cold: the seasonal profiles from hourly totals over warm_start.history,
// levels and dispersion by replaying warm_start.recent of minute rollups
// silently (no alerts), and month-to-date spend plus the spend-cap
// thresholds already alerted (from the anomalies table). Call it before
// Run and before the collector starts observing. It returns the number of
// tenants seeded.
func (d *Detector) WarmStart(ctx context.Context, conn driver.Conn, db string, now time.Time) (int, error) {
	if !identRE.MatchString(db) {
		return 0, fmt.Errorf("invalid database name %q", db)
	}
	now = now.UTC()
	recentFrom := now.Add(-d.cfg.WarmStart.Recent).Truncate(time.Hour)
	histFrom := now.Add(-d.cfg.WarmStart.History).Truncate(time.Hour)

	// 1. Seasonal profiles from hourly totals.
	if histFrom.Before(recentFrom) {
		rows, err := conn.Query(ctx, `SELECT tenant_id, toStartOfHour(minute) AS h, sum(count)
FROM `+db+`.usage_1m WHERE minute >= ? AND minute < ?
GROUP BY tenant_id, h ORDER BY tenant_id, h`, histFrom, recentFrom)
		if err != nil {
			return 0, fmt.Errorf("warm start: query hourly usage: %w", err)
		}
		for rows.Next() {
			var tenant string
			var h time.Time
			var n uint64
			if err := rows.Scan(&tenant, &h, &n); err != nil {
				rows.Close()
				return 0, fmt.Errorf("warm start: scan hourly usage: %w", err)
			}
			d.seedHour(tenant, int32(h.Unix()/3600), float64(n), int32(recentFrom.Unix()/60)-1)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return 0, fmt.Errorf("warm start: hourly usage: %w", err)
		}
	}

	// 2. Levels and dispersion: replay recent minutes with alerts muted.
	sink := d.sink
	d.sink = SinkFunc(func(context.Context, Alert) {})
	defer func() { d.sink = sink }()
	cur := int64(-1)
	lateness := d.cfg.Lateness
	skipped, firstBad, err := QueryRollups(ctx, conn, db, recentFrom, now.Truncate(time.Minute), func(r *Rollup) error {
		m := r.Minute.Unix() / 60
		if cur >= 0 && m > cur {
			d.Advance(ctx, time.Unix(m*60, 0).Add(lateness))
		}
		cur = m
		d.ObserveRollup(r)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("warm start: %w", err)
	}
	if skipped > 0 {
		d.log.Warn("warm start skipped rollups with unusable numbers", "component", "anomaly", "count", skipped, "err", firstBad)
	}
	if cur >= 0 {
		d.Advance(ctx, time.Unix((cur+1)*60, 0).Add(lateness))
	}

	// 3. Month-to-date spend, and thresholds already alerted this month.
	monthFrom, _ := monthBounds(now.Unix())
	mf := time.Unix(monthFrom, 0).UTC()
	alerted := map[string]float64{}
	arows, err := conn.Query(ctx, `SELECT tenant_id, max(ratio) FROM `+db+`.anomalies
WHERE metric = ? AND starts_at >= ? GROUP BY tenant_id`, MetricSpendCap, mf)
	if err != nil {
		return 0, fmt.Errorf("warm start: query anomalies: %w", err)
	}
	for arows.Next() {
		var tenant string
		var r float64
		if err := arows.Scan(&tenant, &r); err != nil {
			arows.Close()
			return 0, fmt.Errorf("warm start: scan anomalies: %w", err)
		}
		alerted[tenant] = r
	}
	arows.Close()
	srows, err := conn.Query(ctx, `SELECT tenant_id, toFloat64(sum(cost)) FROM `+db+`.usage_1m
WHERE minute >= ? GROUP BY tenant_id`, mf)
	if err != nil {
		return 0, fmt.Errorf("warm start: query spend: %w", err)
	}
	defer srows.Close()
	for srows.Next() {
		var tenant string
		var spend float64
		if err := srows.Scan(&tenant, &spend); err != nil {
			return 0, fmt.Errorf("warm start: scan spend: %w", err)
		}
		d.SetSpend(tenant, now, spend, alerted[tenant])
	}
	if err := srows.Err(); err != nil {
		return 0, err
	}
	n := d.Stats().Tenants
	d.log.Info("warm start done", "count", n, "duration", time.Since(now))
	return n, nil
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
