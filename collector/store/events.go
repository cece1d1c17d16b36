package store

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
)

// Row is a priced event, ready to store.
type Row struct {
	Event        *event.Event
	Plan         string
	UnitPrice    decimal.Decimal
	Cost         decimal.Decimal
	PriceVersion string
}

// EventColumns is the column list InsertEvents names.
const EventColumns = "tenant_id, kind, time, time_ms, id, quantity, service, route, user_id, " +
	"latency_ms, status_code, error, attrs_keys, attrs_values, plan, unit_price, cost, price_version, ingested_at"

// InsertEvents writes rows as one native batch, column by column. The batch
// is always sent or aborted, so a failure never holds a pooled connection.
// In a cluster the Distributed table splits the batch by tenant and the
// insert returns once every shard stored its part (insert_distributed_sync),
// or fails; after a failure some shards may hold their part, which is why
// the collector checks what is stored before it inserts again.
func (s *Store) InsertEvents(ctx context.Context, rows []Row, ingestedAt time.Time) error {
	if len(rows) == 0 {
		return nil
	}
	n := len(rows)
	var (
		tenant, kind, id, service, route, user, plan, version = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		ts, ingested                                          = make([]time.Time, n), make([]time.Time, n)
		ms, status                                            = make([]uint16, n), make([]uint16, n)
		qty, latency                                          = make([]float64, n), make([]float64, n)
		errs                                                  = make([]uint8, n)
		keys, values                                          = make([][]string, n), make([][]string, n)
		unit, cost                                            = make([]decimal.Decimal, n), make([]decimal.Decimal, n)
	)
	ingestedAt = ingestedAt.UTC().Truncate(time.Second)
	for i, r := range rows {
		e := r.Event
		tenant[i], kind[i], id[i] = e.TenantID, e.Kind, e.ID
		ts[i], ms[i] = e.Time.UTC().Truncate(time.Second), event.Milli(e.Time)
		qty[i], service[i], route[i], user[i] = e.Quantity, e.Service, e.Route, e.UserID
		latency[i], status[i] = e.LatencyMs, uint16(e.StatusCode)
		if e.Error {
			errs[i] = 1
		}
		keys[i], values[i] = attrColumns(e.Attrs)
		plan[i], unit[i], cost[i], version[i] = r.Plan, r.UnitPrice, r.Cost, r.PriceVersion
		ingested[i] = ingestedAt
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.Table("events")+" ("+EventColumns+")")
	if err != nil {
		return fmt.Errorf("prepare events batch: %w", err)
	}
	cols := []any{tenant, kind, ts, ms, id, qty, service, route, user, latency, status, errs, keys, values, plan, unit, cost, version, ingested}
	for i, c := range cols {
		if err := batch.Column(i).Append(c); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("append events column %d: %w", i, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d events: %w", n, err)
	}
	return nil
}

var emptyStrings = []string{}

func attrColumns(attrs map[string]string) (keys, values []string) {
	if len(attrs) == 0 {
		return emptyStrings, emptyStrings
	}
	keys, values = make([]string, 0, len(attrs)), make([]string, 0, len(attrs))
	for k, v := range attrs {
		keys = append(keys, k)
		values = append(values, v)
	}
	return keys, values
}

// EventKey identifies a stored event for the duplicate checks: a tenant's
// id at an event time. A re-send of an event carries its time too.
type EventKey struct {
	TenantID string
	Kind     string
	ID       string
	Time     time.Time
	// From and To, when From is set, widen the search from the event's own
	// time to any stored copy of the id in [From, To]: for messages whose
	// time may differ between copies.
	From, To time.Time
}

// existingChunk is how many keys one lookup query carries.
const existingChunk = 20000

// ExistingIDs returns which of keys are already in events, as
// tenant+"\x00"+id. A key without From is matched on the sorting key
// (tenant, kind, event second) through an external table of the keys, so
// each key reads at most the granules that can hold it; a key with From is
// matched by tenant and id over its time range.
func (s *Store) ExistingIDs(ctx context.Context, keys []EventKey) (map[string]struct{}, error) {
	found := make(map[string]struct{})
	var exact, wide []EventKey
	for _, k := range keys {
		if k.From.IsZero() {
			exact = append(exact, k)
		} else {
			wide = append(wide, k)
		}
	}
	for start := 0; start < len(exact); start += existingChunk {
		if err := s.existingExact(ctx, exact[start:min(start+existingChunk, len(exact))], found); err != nil {
			return nil, err
		}
	}
	for start := 0; start < len(wide); start += existingChunk {
		if err := s.existingWide(ctx, wide[start:min(start+existingChunk, len(wide))], found); err != nil {
			return nil, err
		}
	}
	return found, nil
}

func (s *Store) existingExact(ctx context.Context, keys []EventKey, found map[string]struct{}) error {
	tbl, err := ext.NewTable("keys",
		ext.Column("tenant_id", "String"), ext.Column("kind", "String"),
		ext.Column("t", "UInt32"), ext.Column("id", "String"))
	if err != nil {
		return fmt.Errorf("check stored ids: %w", err)
	}
	type exactKey struct {
		tenant, kind, id string
		t                uint32
	}
	wanted := make(map[exactKey]struct{}, len(keys))
	for _, k := range keys {
		t := uint32(k.Time.Unix())
		wanted[exactKey{k.TenantID, k.Kind, k.ID, t}] = struct{}{}
		if err := tbl.Append(k.TenantID, k.Kind, t, k.ID); err != nil {
			return fmt.Errorf("check stored ids: %w", err)
		}
	}
	q := "SELECT tenant_id, kind, toUInt32(time), id FROM " + s.Table("events") +
		" WHERE (tenant_id, kind, time) IN (SELECT tenant_id, kind, toDateTime(t) FROM keys)" +
		" AND (tenant_id, id) IN (SELECT tenant_id, id FROM keys)"
	rows, err := s.conn.Query(clickhouse.Context(ctx, clickhouse.WithExternalTable(tbl)), q)
	if err != nil {
		return fmt.Errorf("check stored ids: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k exactKey
		if err := rows.Scan(&k.tenant, &k.kind, &k.t, &k.id); err != nil {
			return fmt.Errorf("check stored ids: %w", err)
		}
		// The two IN sets match their cross product: keep only asked keys.
		if _, ok := wanted[k]; ok {
			found[k.tenant+"\x00"+k.id] = struct{}{}
		}
	}
	return rows.Err()
}

func (s *Store) existingWide(ctx context.Context, keys []EventKey, found map[string]struct{}) error {
	tenants := make(map[string]struct{})
	wanted := make(map[string]struct{}, len(keys))
	var tset, iset []any
	lo, hi := keys[0].From, keys[0].To
	for _, k := range keys {
		if _, ok := tenants[k.TenantID]; !ok {
			tenants[k.TenantID] = struct{}{}
			tset = append(tset, k.TenantID)
		}
		iset = append(iset, k.ID)
		wanted[k.TenantID+"\x00"+k.ID] = struct{}{}
		lo, hi = minTime(lo, k.From), maxTime(hi, k.To)
	}
	q := "SELECT tenant_id, id FROM " + s.Table("events") +
		" WHERE time >= toDateTime(?) AND time <= toDateTime(?) AND tenant_id IN ? AND id IN ?"
	rows, err := s.conn.Query(ctx, q,
		lo.UTC().Truncate(time.Second).Unix(), hi.UTC().Add(time.Second).Unix(),
		clickhouse.GroupSet{Value: tset}, clickhouse.GroupSet{Value: iset})
	if err != nil {
		return fmt.Errorf("check stored ids: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var tenant, id string
		if err := rows.Scan(&tenant, &id); err != nil {
			return fmt.Errorf("check stored ids: %w", err)
		}
		// The IN lists match the cross product of tenants and ids: keep only asked pairs.
		if key := tenant + "\x00" + id; hasKey(wanted, key) {
			found[key] = struct{}{}
		}
	}
	return rows.Err()
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func hasKey(m map[string]struct{}, k string) bool { _, ok := m[k]; return ok }

// DropPartitionsBefore drops whole daily event partitions older than cutoff
// and returns their ids. It is retention that works on every version. In
// a cluster it drops them from every shard's events_local (a Distributed
// table has no partitions), and returns each id once.
func (s *Store) DropPartitionsBefore(ctx context.Context, cutoff time.Time) ([]string, error) {
	limit := cutoff.UTC().Format("20060102")
	dropped := map[string]bool{}
	for _, node := range s.nodes() {
		parts, err := s.eventPartitionsBefore(ctx, node, limit)
		if err != nil {
			return nil, err
		}
		for _, p := range parts {
			if _, err := strconv.ParseUint(p, 10, 32); err != nil {
				return nil, fmt.Errorf("unexpected partition id %q", p)
			}
			if err := node.conn.Exec(ctx, "ALTER TABLE "+s.local("events")+" DROP PARTITION "+p); err != nil {
				return nil, fmt.Errorf("drop partition %s on %s: %w", p, node.addr, err)
			}
			dropped[p] = true
		}
	}
	parts := make([]string, 0, len(dropped))
	for p := range dropped {
		parts = append(parts, p)
	}
	sort.Strings(parts)
	return parts, nil
}

// eventPartitionsBefore lists the active partitions of node's events
// table (events_local on a shard) whose id sorts before limit.
func (s *Store) eventPartitionsBefore(ctx context.Context, node shard, limit string) ([]string, error) {
	table := strings.TrimPrefix(s.local("events"), s.cfg.Database+".")
	rows, err := node.conn.Query(ctx,
		"SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active AND partition < ?",
		s.cfg.Database, table, limit)
	if err != nil {
		return nil, fmt.Errorf("list partitions on %s: %w", node.addr, err)
	}
	defer rows.Close()
	var parts []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("list partitions on %s: %w", node.addr, err)
		}
		parts = append(parts, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list partitions on %s: %w", node.addr, err)
	}
	return parts, nil
}

// DeleteTenant removes every row of tenant from events, corrections,
// usage_1m, usage_1h, anomalies and decisions. It is an asynchronous ClickHouse
// mutation per table (per shard's local table in a cluster): rows
// disappear when it completes (see system.mutations, and WaitMutations).
// The billing_exports records of what was invoiced stay.
func (s *Store) DeleteTenant(ctx context.Context, tenant string) error {
	if !event.ValidTenantID(tenant) {
		return fmt.Errorf("delete tenant: invalid tenant id %q", tenant)
	}
	for _, node := range s.nodes() {
		for _, t := range []string{"events", "corrections", "usage_1m", "usage_1h", "anomalies", "decisions"} {
			if err := node.conn.Exec(ctx, "ALTER TABLE "+s.local(t)+" DELETE WHERE tenant_id = ?", tenant); err != nil {
				return fmt.Errorf("delete tenant from %s on %s: %w", t, node.addr, err)
			}
		}
	}
	return nil
}

// WaitMutations waits until no mutation of the store's tables is pending
// (on any shard), polling every interval: DeleteTenant's rows are gone,
// and inserts made after it are safe from it, once it returns nil.
func (s *Store) WaitMutations(ctx context.Context, interval time.Duration) error {
	for {
		var pending uint64
		for _, node := range s.nodes() {
			var n uint64
			err := node.conn.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = ? AND is_done = 0", s.cfg.Database).Scan(&n)
			if err != nil {
				return fmt.Errorf("read system.mutations on %s: %w", node.addr, err)
			}
			pending += n
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d mutations still pending: %w", pending, ctx.Err())
		case <-time.After(interval):
		}
	}
}
