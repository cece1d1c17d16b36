package api

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"
)

// listResponse is the envelope of every list endpoint.
type listResponse struct {
	TenantID   string    `json:"tenant_id,omitempty"`
	From       time.Time `json:"from"`
	To         time.Time `json:"to"`
	Window     string    `json:"window,omitempty"`
	Currency   string    `json:"currency,omitempty"`
	Total      string    `json:"total,omitempty"`
	Items      any       `json:"items"`
	NextCursor string    `json:"next_cursor,omitempty"`
}

// collect runs q with LIMIT offset, limit+1 appended and scans at most
// limit rows; more reports whether another page exists.
func collect[T any](ctx context.Context, conn driver.Conn, q string, args []any, limit, offset int,
	scan func(driver.Rows) (T, error)) (items []T, more bool, err error) {
	rows, err := conn.Query(ctx, q+" LIMIT ?, ?", append(args, offset, limit+1)...)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	items = make([]T, 0, min(limit, 256))
	for rows.Next() {
		if len(items) == limit {
			more = true
			break
		}
		it, err := scan(rows)
		if err != nil {
			return nil, false, err
		}
		items = append(items, it)
	}
	return items, more, rows.Err()
}

// serveList runs q for one page and answers resp with the page's items and
// the next cursor. what names the list in the log when the query fails.
func serveList[T any](s *Server, w http.ResponseWriter, r *http.Request, what, q string, args []any, limit, offset int,
	resp listResponse, scan func(driver.Rows) (T, error)) {
	ctx, cancel := s.queryCtx(r)
	defer cancel()
	items, more, err := collect(ctx, s.db.Conn(), q, args, limit, offset, scan)
	if err != nil {
		s.internal(w, r, fmt.Errorf("%s: %w", what, err))
		return
	}
	resp.Items, resp.NextCursor = items, nextCursor(more, offset, limit)
	writeJSON(w, http.StatusOK, resp)
}

// andEq adds "AND col = ?" with val bound when val is set. col is always a
// constant of this package, never user input.
func andEq(q string, args []any, col, val string) (string, []any) {
	if val == "" {
		return q, args
	}
	return q + " AND " + col + " = ?", append(args, val)
}

func nextCursor(more bool, offset, limit int) string {
	if !more {
		return ""
	}
	return encodeCursor(offset + limit)
}

// ceilSecond rounds t up to a whole second: for a DateTime column c,
// c >= t exactly when c >= ceilSecond(t), and the same holds for <.
func ceilSecond(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

// storedFloat is finite(v) rounded to 9 decimals, with a warning when
// storage held a non-finite sum (rows stored before events were bounded),
// so the value answers null and the operator learns where it came from.
func (s *Server) storedFloat(tenant, kind, field string, v float64) *float64 {
	f := finite(v)
	if f == nil {
		s.log.Warn("stored value is not finite; answered null", "tenant", tenant, "kind", kind, "field", field, "value", v)
		return nil
	}
	r := roundDecimals(*f)
	return &r
}

// roundDecimals is the float nearest to f rounded to 9 decimals, the
// precision of billing. The rollups sum quantities as floats, and such a
// sum carries noise (287.2599999999999 for 287.26); rounded, it prints as
// the decimal it stands for.
func roundDecimals(f float64) float64 {
	r, _ := decimal.NewFromFloat(f).Round(9).Float64()
	return r
}

// finite maps NaN and infinities, which JSON cannot carry, to null.
func finite(f float64) *float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return &f
}

func (s *Server) queryCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), s.cfg.QueryTimeout)
}

func (s *Server) table(name string) string { return s.db.Database() + "." + name }

type usageBucket struct {
	Time         time.Time `json:"time"`
	Kind         string    `json:"kind"`
	Events       uint64    `json:"events"`
	Quantity     *float64  `json:"quantity"` // null when storage holds a non-finite sum
	Cost         string    `json:"cost"`
	Errors       uint64    `json:"errors"`
	LatencyCount uint64    `json:"latency_count"`
	LatencyP50   *float64  `json:"latency_p50_ms"`
	LatencyP95   *float64  `json:"latency_p95_ms"`
	LatencyP99   *float64  `json:"latency_p99_ms"`
}

var windowExpr = map[string]string{
	"minute": "minute",
	"hour":   "toDateTime(intDiv(toUInt32(minute), 3600) * 3600)",
	"day":    "toDateTime(intDiv(toUInt32(minute), 86400) * 86400)",
}

// usage: GET /api/v1/tenants/{tenant_id}/usage?from&to&window&kind&limit&cursor
// A minute of usage_1m counts when its start lies in [from, to); windows
// are aligned to UTC.
func (s *Server) usage(w http.ResponseWriter, r *http.Request, _ principal, tenant string) {
	p := parseParams(r.URL.RawQuery)
	from, to := p.timeRange(s.cfg.MaxRange)
	window := p.enum("window", "hour", "minute", "hour", "day")
	kind := p.kind("kind")
	limit, offset := p.page(s.cfg.DefaultPageSize, s.cfg.MaxPageSize)
	if err := p.done(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	q := fmt.Sprintf(`SELECT %s AS t, kind, sum(count), sum(quantity), sum(cost), sum(errors), sum(latency_count),
    quantilesTDigestMerge(0.5, 0.95, 0.99)(latency)
FROM %s
WHERE tenant_id = ? AND minute >= toDateTime(?) AND minute < toDateTime(?)`, windowExpr[window], s.table("usage_1m"))
	args := []any{tenant, ceilSecond(from), ceilSecond(to)}
	q, args = andEq(q, args, "kind", kind)
	q += " GROUP BY t, kind ORDER BY t, kind"
	resp := listResponse{TenantID: tenant, From: from, To: to, Window: window}
	serveList(s, w, r, "usage of "+tenant, q, args, limit, offset, resp, func(rows driver.Rows) (usageBucket, error) {
		var b usageBucket
		var cost decimal.Decimal
		var qs []float32
		var qty float64
		if err := rows.Scan(&b.Time, &b.Kind, &b.Events, &qty, &cost, &b.Errors, &b.LatencyCount, &qs); err != nil {
			return b, err
		}
		b.Time, b.Cost, b.Quantity = b.Time.UTC(), cost.StringFixed(9), s.storedFloat(tenant, b.Kind, "quantity", qty)
		if b.LatencyCount > 0 && len(qs) == 3 {
			b.LatencyP50, b.LatencyP95, b.LatencyP99 = finite(float64(qs[0])), finite(float64(qs[1])), finite(float64(qs[2]))
		}
		return b, nil
	})
}

type kindCost struct {
	Kind     string   `json:"kind"`
	Events   uint64   `json:"events"`
	Quantity *float64 `json:"quantity"` // null when storage holds a non-finite sum
	Cost     string   `json:"cost"`
}

// tenantCost: GET /api/v1/tenants/{tenant_id}/cost?from&to — cost by kind
// from usage_1m (minutes starting in [from, to)). The exact, invoiceable
// figure is the billing export.
func (s *Server) tenantCost(w http.ResponseWriter, r *http.Request, _ principal, tenant string) {
	p := parseParams(r.URL.RawQuery)
	from, to := p.timeRange(s.cfg.MaxRange)
	if err := p.done(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	q := `SELECT kind, sum(count), sum(quantity), sum(cost) FROM ` + s.table("usage_1m") +
		` WHERE tenant_id = ? AND minute >= toDateTime(?) AND minute < toDateTime(?) GROUP BY kind ORDER BY kind`
	ctx, cancel := s.queryCtx(r)
	defer cancel()
	// Kinds are few (built-ins plus configured ones): one bounded page.
	items, _, err := collect(ctx, s.db.Conn(), q, []any{tenant, ceilSecond(from), ceilSecond(to)}, 1000, 0,
		func(rows driver.Rows) (kindCost, error) {
			var k kindCost
			var c decimal.Decimal
			var qty float64
			err := rows.Scan(&k.Kind, &k.Events, &qty, &c)
			k.Cost, k.Quantity = c.StringFixed(9), s.storedFloat(tenant, k.Kind, "quantity", qty)
			return k, err
		})
	if err != nil {
		s.internal(w, r, fmt.Errorf("cost of %s: %w", tenant, err))
		return
	}
	total := decimal.Zero
	for _, it := range items {
		total = total.Add(decimal.RequireFromString(it.Cost))
	}
	writeJSON(w, http.StatusOK, listResponse{TenantID: tenant, From: from, To: to, Currency: s.currency,
		Total: total.StringFixed(9), Items: items})
}

type tenantCostItem struct {
	TenantID string `json:"tenant_id"`
	Events   uint64 `json:"events"`
	Cost     string `json:"cost"`
}

// costs: GET /api/v1/costs?from&to&order=tenant_id|cost_desc&limit&cursor —
// cost per tenant from usage_1m.
func (s *Server) costs(w http.ResponseWriter, r *http.Request, _ principal, _ string) {
	p := parseParams(r.URL.RawQuery)
	from, to := p.timeRange(s.cfg.MaxRange)
	order := p.enum("order", "tenant_id", "tenant_id", "cost_desc")
	limit, offset := p.page(s.cfg.DefaultPageSize, s.cfg.MaxPageSize)
	if err := p.done(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	orderBy := "tenant_id"
	if order == "cost_desc" {
		orderBy = "c DESC, tenant_id"
	}
	q := `SELECT tenant_id, sum(count), sum(cost) AS c FROM ` + s.table("usage_1m") +
		` WHERE minute >= toDateTime(?) AND minute < toDateTime(?) GROUP BY tenant_id ORDER BY ` + orderBy
	resp := listResponse{From: from, To: to, Currency: s.currency}
	serveList(s, w, r, "costs", q, []any{ceilSecond(from), ceilSecond(to)}, limit, offset, resp,
		func(rows driver.Rows) (tenantCostItem, error) {
			var it tenantCostItem
			var c decimal.Decimal
			err := rows.Scan(&it.TenantID, &it.Events, &c)
			it.Cost = c.StringFixed(9)
			return it, err
		})
}
