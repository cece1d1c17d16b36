package store

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
)

// UsageRow is one minute of a tenant's kind in usage_1m, its partial rows
// (one per insert, until merges sum them) added up.
type UsageRow struct {
	TenantID     string
	Kind         string
	Minute       time.Time
	Count        uint64
	Quantity     float64
	Cost         float64
	Errors       uint64
	LatencyCount uint64  // events that reported a latency
	LatencyP95   float64 // ms; 0 when LatencyCount is 0
}

// Rollups calls fn for each usage_1m rollup with minute in [from, to), in
// order of minute, tenant and kind. It stops at fn's first error and
// returns it.
func (s *Store) Rollups(ctx context.Context, from, to time.Time, fn func(UsageRow) error) error {
	return s.rollups(ctx, nil, from, to, fn)
}

// rollups is Rollups, of only the tenants of only when it is not nil.
func (s *Store) rollups(ctx context.Context, only []string, from, to time.Time, fn func(UsageRow) error) error {
	ctx, filter, err := onlyTenants(ctx, only)
	if err != nil || ctx == nil {
		return err
	}
	rows, err := s.conn.Query(ctx, `SELECT tenant_id, kind, minute, sum(count), sum(quantity), toFloat64(sum(cost)),
       sum(errors), sum(latency_count), quantilesTDigestMerge(0.5, 0.95, 0.99)(latency)
FROM `+s.Table("usage_1m")+` WHERE minute >= ? AND minute < ?`+filter+`
GROUP BY tenant_id, kind, minute ORDER BY minute, tenant_id, kind`, from.UTC(), to.UTC())
	if err != nil {
		return fmt.Errorf("query usage_1m: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			r UsageRow
			q []float32
		)
		if err := rows.Scan(&r.TenantID, &r.Kind, &r.Minute, &r.Count, &r.Quantity, &r.Cost, &r.Errors, &r.LatencyCount, &q); err != nil {
			return fmt.Errorf("scan usage_1m: %w", err)
		}
		if r.LatencyCount > 0 && len(q) == 3 && !math.IsNaN(float64(q[1])) {
			r.LatencyP95 = float64(q[1])
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	return rows.Err()
}

// HourlyCount is a tenant's events in one hour, over all kinds.
type HourlyCount struct {
	TenantID string
	Hour     time.Time
	Count    uint64
}

// HourlyCounts calls fn for each tenant's hourly event count with hour in
// [from, to), in order of tenant and hour. It reads usage_1h, which counts
// whole hours: from and to are meant to be whole hours, and an hour that
// starts before to is counted whole. Hours without events (or whose events
// were all voided) have no row.
func (s *Store) HourlyCounts(ctx context.Context, from, to time.Time, fn func(HourlyCount) error) error {
	return s.hourlyCounts(ctx, nil, from, to, fn)
}

// hourlyCounts is HourlyCounts, of only the tenants of only when it is
// not nil.
func (s *Store) hourlyCounts(ctx context.Context, only []string, from, to time.Time, fn func(HourlyCount) error) error {
	ctx, filter, err := onlyTenants(ctx, only)
	if err != nil || ctx == nil {
		return err
	}
	rows, err := s.conn.Query(ctx, `SELECT tenant_id, hour, sum(count) AS n
FROM `+s.Table("usage_1h")+` WHERE hour >= ? AND hour < ?`+filter+`
GROUP BY tenant_id, hour HAVING n != 0 ORDER BY tenant_id, hour`, from.UTC(), to.UTC())
	if err != nil {
		return fmt.Errorf("query hourly usage: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var h HourlyCount
		if err := rows.Scan(&h.TenantID, &h.Hour, &h.Count); err != nil {
			return fmt.Errorf("scan hourly usage: %w", err)
		}
		if err := fn(h); err != nil {
			return err
		}
	}
	return rows.Err()
}

// SpendSince returns each tenant's cost in usage_1m from since on.
func (s *Store) SpendSince(ctx context.Context, since time.Time) (map[string]float64, error) {
	rows, err := s.conn.Query(ctx, "SELECT tenant_id, toFloat64(sum(cost)) FROM "+s.Table("usage_1m")+
		" WHERE minute >= ? GROUP BY tenant_id", since.UTC())
	if err != nil {
		return nil, fmt.Errorf("query spend: %w", err)
	}
	defer rows.Close()
	out := map[string]float64{}
	for rows.Next() {
		var tenant string
		var spend float64
		if err := rows.Scan(&tenant, &spend); err != nil {
			return nil, fmt.Errorf("scan spend: %w", err)
		}
		out[tenant] = spend
	}
	return out, rows.Err()
}

// TenantHour is one tenant's use of the pooled resources in one hour.
type TenantHour struct {
	TenantID       string
	Hour           time.Time
	Events         uint64  // events of every kind (usage_1m count)
	Cost           float64 // usage_1m cost
	DBQueryMs      float64 // sum of latency_ms of db_query events (from events)
	ComputeSeconds float64 // quantity of compute_seconds events (usage_1m)
}

// TenantHours calls fn for each tenant's hourly use of the pooled
// resources with time in [from, to), in order of hour and tenant; an hour
// in which a tenant used nothing has no row. Events, cost and compute
// seconds come from usage_1m. usage_1m keeps no latency sum, so db_query
// time is summed from events (its primary key starts with the tenant, so
// the kind filter prunes by daily partition and granule, not by key): it
// counts stored db_query events as written (corrections are not netted)
// and reads nothing from partitions retention has dropped.
func (s *Store) TenantHours(ctx context.Context, from, to time.Time, fn func(TenantHour) error) error {
	rows, err := s.conn.Query(ctx, `SELECT tenant_id, h, sum(events), sum(cost), sum(db_ms), sum(compute)
FROM (
    SELECT tenant_id, toStartOfHour(minute) AS h, sum(count) AS events, toFloat64(sum(cost)) AS cost,
           toFloat64(0) AS db_ms, sumIf(quantity, kind = ?) AS compute
    FROM `+s.Table("usage_1m")+` WHERE minute >= ? AND minute < ?
    GROUP BY tenant_id, h
    UNION ALL
    SELECT tenant_id, toStartOfHour(time) AS h, toUInt64(0) AS events, toFloat64(0) AS cost,
           sum(latency_ms) AS db_ms, toFloat64(0) AS compute
    FROM `+s.Table("events")+` WHERE kind = ? AND time >= ? AND time < ?
    GROUP BY tenant_id, h
)
GROUP BY tenant_id, h ORDER BY h, tenant_id`,
		event.KindComputeSeconds, from.UTC(), to.UTC(), event.KindDBQuery, from.UTC(), to.UTC())
	if err != nil {
		return fmt.Errorf("query tenant hours: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var h TenantHour
		if err := rows.Scan(&h.TenantID, &h.Hour, &h.Events, &h.Cost, &h.DBQueryMs, &h.ComputeSeconds); err != nil {
			return fmt.Errorf("scan tenant hours: %w", err)
		}
		h.Hour = h.Hour.UTC()
		if err := fn(h); err != nil {
			return err
		}
	}
	return rows.Err()
}
