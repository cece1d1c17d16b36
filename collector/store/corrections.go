package store

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
)

// StoredEvent is what a correction needs of a stored event.
type StoredEvent struct {
	TenantID     string
	ID           string
	Kind         string
	Time         time.Time // with milliseconds
	Quantity     float64
	Error        bool
	Plan         string
	UnitPrice    decimal.Decimal
	Cost         decimal.Decimal
	PriceVersion string
}

// EventRef names a stored event of a tenant: its id, and its time to the
// second when known.
type EventRef struct {
	ID   string
	Time time.Time // zero: anywhere in the lookup window
}

// LookupEvents returns the stored events of tenant among refs, by id. A ref
// with a Time matches only a row at that second; one without matches a row
// in [from, to], or at any time when from is zero. If an id was stored more
// than once (before the dedup horizon existed), the first stored copy is
// returned.
func (s *Store) LookupEvents(ctx context.Context, tenant string, refs []EventRef, from, to time.Time) (map[string]StoredEvent, error) {
	out := make(map[string]StoredEvent, len(refs))
	if len(refs) == 0 {
		return out, nil
	}
	at := make(map[string]int64, len(refs)) // id -> wanted second, or -1
	ids := make([]any, 0, len(refs))
	var lo, hi time.Time
	wide := false
	for _, r := range refs {
		if _, dup := at[r.ID]; dup {
			continue
		}
		ids = append(ids, r.ID)
		if r.Time.IsZero() {
			at[r.ID] = -1
			wide = true
			continue
		}
		sec := r.Time.UTC().Truncate(time.Second)
		at[r.ID] = sec.Unix()
		if lo.IsZero() || sec.Before(lo) {
			lo = sec
		}
		if sec.After(hi) {
			hi = sec
		}
	}
	q := "SELECT id, kind, time, time_ms, quantity, error, plan, unit_price, cost, price_version FROM " + s.Table("events") +
		" WHERE tenant_id = ? AND id IN ?"
	args := []any{tenant, clickhouse.GroupSet{Value: ids}}
	switch {
	case wide && from.IsZero():
		// any time
	case wide:
		lo, hi = minNonZero(lo, from), maxTime(hi, to)
		fallthrough
	default:
		q += " AND time >= toDateTime(?) AND time <= toDateTime(?)"
		args = append(args, lo.Unix(), hi.Unix())
	}
	q += " ORDER BY ingested_at, time, time_ms"
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("look up events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			e    StoredEvent
			sec  time.Time
			ms   uint16
			errf uint8
		)
		if err := rows.Scan(&e.ID, &e.Kind, &sec, &ms, &e.Quantity, &errf, &e.Plan, &e.UnitPrice, &e.Cost, &e.PriceVersion); err != nil {
			return nil, fmt.Errorf("look up events: %w", err)
		}
		if want := at[e.ID]; want >= 0 && sec.Unix() != want {
			continue
		}
		if _, seen := out[e.ID]; seen {
			continue
		}
		e.TenantID, e.Error = tenant, errf != 0
		e.Time = sec.UTC().Add(time.Duration(ms) * time.Millisecond)
		out[e.ID] = e
	}
	return out, rows.Err()
}

func minNonZero(a, b time.Time) time.Time {
	if a.IsZero() {
		return b
	}
	return minTime(a, b)
}

// CorrectionRow is one stored correction: the deltas it makes to its
// event, at the event's time, and who made it and why.
type CorrectionRow struct {
	TenantID     string
	Kind         string
	Time         time.Time // the event's time, with milliseconds
	EventID      string
	CorrectionID string
	Seq          uint32 // 1 for the event's first correction
	Action       string
	Quantity     float64 // the event's quantity after this correction
	DeltaCount   int64
	DeltaQty     float64
	DeltaCost    decimal.Decimal
	DeltaErrors  int64
	UnitPrice    decimal.Decimal
	PriceVersion string
	Plan         string
	Reason       string
	By           string
	Forced       bool
	CorrectedAt  time.Time
}

// CorrectionColumns is the column list InsertCorrections names and
// CorrectionsOf reads.
const CorrectionColumns = "tenant_id, kind, time, time_ms, event_id, correction_id, seq, action, quantity, " +
	"delta_count, delta_quantity, delta_cost, delta_errors, unit_price, price_version, plan, reason, corrected_by, forced, corrected_at"

// InsertCorrections stores rows with one insert into the corrections table
// (a single partition, so the insert is atomic); its view adds their deltas
// to usage_1m. In a cluster the rows of one tenant go to its one shard, so
// an insert of one tenant's corrections stays atomic.
func (s *Store) InsertCorrections(ctx context.Context, rows []CorrectionRow) error {
	return insertRows(ctx, s, "corrections", CorrectionColumns, rows, func(r *CorrectionRow) []any {
		return []any{r.TenantID, r.Kind, r.Time.UTC().Truncate(time.Second), event.Milli(r.Time), r.EventID,
			r.CorrectionID, r.Seq, r.Action, r.Quantity, r.DeltaCount, r.DeltaQty, r.DeltaCost, r.DeltaErrors,
			r.UnitPrice, r.PriceVersion, r.Plan, r.Reason, r.By, boolUInt8(r.Forced), r.CorrectedAt.UTC().Truncate(time.Second)}
	})
}

// CorrectionsOf returns the stored corrections of tenant whose event or
// correction id is among ids, oldest first (by seq within an event).
func (s *Store) CorrectionsOf(ctx context.Context, tenant string, eventIDs, correctionIDs []string) ([]CorrectionRow, error) {
	if len(eventIDs) == 0 && len(correctionIDs) == 0 {
		return nil, nil
	}
	set := func(ids []string) clickhouse.GroupSet {
		v := make([]any, 0, max(len(ids), 1))
		for _, id := range ids {
			v = append(v, id)
		}
		if len(v) == 0 {
			v = append(v, "") // an empty IN () is a syntax error; no id is empty
		}
		return clickhouse.GroupSet{Value: v}
	}
	rows, err := s.conn.Query(ctx, "SELECT "+CorrectionColumns+" FROM "+s.Table("corrections")+
		" WHERE tenant_id = ? AND (event_id IN ? OR correction_id IN ?) ORDER BY event_id, seq",
		tenant, set(eventIDs), set(correctionIDs))
	if err != nil {
		return nil, fmt.Errorf("read corrections: %w", err)
	}
	defer rows.Close()
	var out []CorrectionRow
	for rows.Next() {
		var (
			r      CorrectionRow
			ms     uint16
			forced uint8
		)
		if err := rows.Scan(&r.TenantID, &r.Kind, &r.Time, &ms, &r.EventID, &r.CorrectionID, &r.Seq, &r.Action,
			&r.Quantity, &r.DeltaCount, &r.DeltaQty, &r.DeltaCost, &r.DeltaErrors, &r.UnitPrice, &r.PriceVersion,
			&r.Plan, &r.Reason, &r.By, &forced, &r.CorrectedAt); err != nil {
			return nil, fmt.Errorf("read corrections: %w", err)
		}
		r.Time = r.Time.UTC().Add(time.Duration(ms) * time.Millisecond)
		r.CorrectedAt, r.Forced = r.CorrectedAt.UTC(), forced != 0
		out = append(out, r)
	}
	return out, rows.Err()
}
