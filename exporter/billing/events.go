package billing

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
)

// EventColumns is the CSV header of the raw-events export. The first twelve
// are wire format v1 (attrs as a JSON object); the last four are what the
// collector added when it priced the event. Append new columns at the end.
var EventColumns = []string{
	"id", "tenant_id", "kind", "time", "quantity", "service", "route", "user_id",
	"latency_ms", "status_code", "error", "attrs", "plan", "unit_price", "cost", "price_version",
}

// EventsRequest selects one tenant's raw events.
type EventsRequest struct {
	Tenant   string    // required
	From, To time.Time // From inclusive, To exclusive
	Format   Format    // ndjson (json is accepted) or csv
	// AsStored writes the events as first stored. By default corrections
	// apply: a voided event is left out, and an amended one carries its
	// amended quantity and cost, so the export bills what the billing
	// export bills and can be imported again as it is.
	AsStored bool
	// Progress, when set, is called with the number of events written so
	// far, every ProgressEvery events and once at the end.
	Progress func(rows int64)
}

// Validate reports whether r is well formed, wrapping ErrInvalid.
func (r EventsRequest) Validate() error {
	if !event.ValidTenantID(r.Tenant) {
		return fmt.Errorf("%w: tenant: required, must match %s", ErrInvalid, event.TenantPattern)
	}
	if err := validRange(r.From, r.To); err != nil {
		return err
	}
	switch r.Format {
	case FormatNDJSON, FormatJSON, FormatCSV:
	default:
		return fmt.Errorf("%w: format: %q must be ndjson or csv", ErrInvalid, r.Format)
	}
	return nil
}

const eventsQuery = `SELECT id, tenant_id, kind, time, time_ms, quantity, service, route, user_id,
    latency_ms, status_code, error, attrs_keys, attrs_values, plan, unit_price, cost, price_version
FROM %s
WHERE tenant_id = ? AND %s
ORDER BY time, time_ms, kind, id`

// eventsBlockRows is the block size asked of ClickHouse for the events
// export.
const eventsBlockRows = 8192

// Events writes one tenant's raw events in [From, To) to w, oldest first.
// NDJSON lines are wire format v1 (event.AppendJSON), so they can be
// replayed or re-ingested; CSV carries the price columns too. It returns the
// number of events written. On error, part of the export may be written.
func (x *Exporter) Events(ctx context.Context, w io.Writer, req EventsRequest) (int64, error) {
	if err := req.Validate(); err != nil {
		return 0, err
	}
	cond, args := timeCond(req.From, req.To)
	args = append([]any{req.Tenant}, args...)
	var fixes map[string]eventFix
	if !req.AsStored {
		var err error
		if fixes, err = x.eventFixes(ctx, cond, args); err != nil {
			return 0, err
		}
	}
	ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{
		"max_bytes_before_external_sort": int(x.cfg.MaxExternalSortBytes),
		// Small blocks keep the driver's read-ahead (two blocks) small: a
		// default 65536-row block of wide events is tens of MB in Go.
		"max_block_size": eventsBlockRows,
	}), clickhouse.WithBlockBufferSize(2))
	rows, err := x.db.Conn().Query(ctx, fmt.Sprintf(eventsQuery, x.table("events"), cond), args...)
	if err != nil {
		return 0, fmt.Errorf("events query: %w", err)
	}
	defer rows.Close()

	bw := bufio.NewWriterSize(w, bufferSize)
	var cw *csv.Writer
	var rec []string
	if req.Format == FormatCSV {
		cw = csv.NewWriter(bw)
		if err := cw.Write(EventColumns); err != nil {
			return 0, fmt.Errorf("write export: %w", err)
		}
		rec = make([]string, len(EventColumns))
	}
	var (
		n     int64
		buf   []byte
		e     event.Event
		sec   time.Time
		ms    uint16
		code  uint16
		isErr uint8
		keys  []string
		vals  []string
		plan  string
		ver   string
		unit  decimal.Decimal
		cost  decimal.Decimal
	)
	for rows.Next() {
		keys, vals = keys[:0], vals[:0]
		if err := rows.Scan(&e.ID, &e.TenantID, &e.Kind, &sec, &ms, &e.Quantity, &e.Service, &e.Route,
			&e.UserID, &e.LatencyMs, &code, &isErr, &keys, &vals, &plan, &unit, &cost, &ver); err != nil {
			return n, fmt.Errorf("events scan: %w", err)
		}
		if f, ok := fixes[e.ID]; ok {
			if f.voided {
				continue
			}
			e.Quantity, cost = f.qty, cost.Add(f.cost)
		}
		e.Time = sec.UTC().Add(time.Duration(ms) * time.Millisecond)
		e.StatusCode, e.Error = int(code), isErr != 0
		e.Attrs = attrsMap(e.Attrs, keys, vals)
		if cw == nil {
			buf = event.AppendJSON(buf[:0], &e)
			buf = append(buf, '\n')
			if _, err := bw.Write(buf); err != nil {
				return n, fmt.Errorf("write export: %w", err)
			}
		} else {
			buf = appendAttrs(buf[:0], &e)
			rec[0], rec[1], rec[2] = e.ID, e.TenantID, e.Kind
			rec[3] = e.Time.Format("2006-01-02T15:04:05.000Z07:00")
			rec[4] = strconv.FormatFloat(e.Quantity, 'f', -1, 64)
			rec[5], rec[6], rec[7] = e.Service, e.Route, e.UserID
			rec[8] = strconv.FormatFloat(e.LatencyMs, 'f', -1, 64)
			rec[9], rec[10] = strconv.Itoa(e.StatusCode), strconv.FormatBool(e.Error)
			rec[11], rec[12] = string(buf), plan
			rec[13], rec[14], rec[15] = unit.StringFixed(9), cost.StringFixed(9), ver
			if err := cw.Write(rec); err != nil {
				return n, fmt.Errorf("write export: %w", err)
			}
		}
		n++
		if req.Progress != nil && n%ProgressEvery == 0 {
			req.Progress(n)
		}
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("events rows: %w", err)
	}
	if cw != nil {
		cw.Flush()
		if err := cw.Error(); err != nil {
			return n, fmt.Errorf("write export: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("write export: %w", err)
	}
	if req.Progress != nil {
		req.Progress(n)
	}
	return n, nil
}

// eventFix is what the corrections of one event did to it.
type eventFix struct {
	voided bool
	qty    float64         // the amended quantity
	cost   decimal.Decimal // the sum of the cost deltas
}

// eventFixes reads the corrections of the tenant's events in the range
// (cond and args select them, as they select the events). Corrections are
// rare, so they are held in memory: one entry per corrected event.
func (x *Exporter) eventFixes(ctx context.Context, cond string, args []any) (map[string]eventFix, error) {
	rows, err := x.db.Conn().Query(ctx, "SELECT event_id, action, quantity, delta_cost FROM "+x.table("corrections")+
		" WHERE tenant_id = ? AND "+cond+" ORDER BY event_id, seq", args...)
	if err != nil {
		return nil, fmt.Errorf("events corrections: %w", err)
	}
	defer rows.Close()
	fixes := map[string]eventFix{}
	for rows.Next() {
		var (
			id, action string
			qty        float64
			delta      decimal.Decimal
		)
		if err := rows.Scan(&id, &action, &qty, &delta); err != nil {
			return nil, fmt.Errorf("events corrections: %w", err)
		}
		f, ok := fixes[id]
		if !ok {
			f.cost = decimal.Zero
		}
		f.cost = f.cost.Add(delta)
		switch action {
		case event.ActionVoid:
			f.voided = true
		case event.ActionAmend:
			f.qty = qty
		}
		fixes[id] = f
	}
	return fixes, rows.Err()
}

// attrsMap rebuilds the attrs map from the two parallel arrays, reusing m.
func attrsMap(m map[string]string, keys, vals []string) map[string]string {
	if len(keys) == 0 {
		return nil
	}
	if m == nil {
		m = make(map[string]string, len(keys))
	}
	clear(m)
	for i, k := range keys {
		if i < len(vals) {
			m[k] = vals[i]
		}
	}
	return m
}

// appendAttrs appends e's attrs as a JSON object with sorted keys, or
// nothing when there are none.
func appendAttrs(buf []byte, e *event.Event) []byte {
	if len(e.Attrs) == 0 {
		return buf
	}
	b, err := json.Marshal(e.Attrs)
	if err != nil { // a map[string]string always marshals
		return buf
	}
	return append(buf, b...)
}
