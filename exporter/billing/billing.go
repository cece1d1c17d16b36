package billing

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
)

// DB is the ClickHouse access the exporter needs; *store.Store satisfies it.
// Its reads qualify table names with Database(); it records an export
// through InsertBillingExport.
type DB interface {
	Conn() driver.Conn
	Database() string
	InsertBillingExport(ctx context.Context, rows []store.BillingExportRow) error
}

var _ DB = (*store.Store)(nil)

// ErrInvalid marks a request the caller got wrong (bad range, tenant id or
// format); the API maps it to 400.
var ErrInvalid = errors.New("invalid export request")

// Format of an export.
type Format string

// Formats. Billing takes CSV or JSON (NDJSON); events take NDJSON or CSV.
const (
	FormatCSV    Format = "csv"
	FormatJSON   Format = "json"   // NDJSON: one JSON object per line
	FormatNDJSON Format = "ndjson" // the same encoding, named for events
)

// Line types of the billing export.
const (
	LineUsage       = "usage"
	LineTenantTotal = "tenant_total"
	// LineAdjustment is the difference of one usage line (tenant, kind,
	// unit price) against an earlier export of the same period.
	LineAdjustment = "adjustment"
	// LineAdjustmentTotal is the difference of a tenant's total.
	LineAdjustmentTotal = "adjustment_total"
)

// BillingColumns is the CSV header of the billing export, in order. It is a
// contract (docs/billing.md): append new columns at the end only.
var BillingColumns = []string{
	"tenant_id", "line_type", "kind", "unit_price", "price_version", "events",
	"quantity", "amount", "amount_rounded", "currency", "period_from", "period_to",
	"adjusts_export_id", "adjusts_generated_at",
}

// Line is one line of the billing export; its JSON form is one NDJSON line.
// Money is carried as exact decimal strings.
type Line struct {
	TenantID      string   `json:"tenant_id"`
	LineType      string   `json:"line_type"`
	Kind          string   `json:"kind"`           // empty on tenant_total
	UnitPrice     *string  `json:"unit_price"`     // null on tenant_total
	PriceVersion  string   `json:"price_version"`  // versions joined by "|"; empty on tenant_total
	Events        int64    `json:"events"`         // number of raw events (a difference on adjustments)
	Quantity      *float64 `json:"quantity"`       // null on tenant_total (units differ by kind)
	Amount        string   `json:"amount"`         // exact sum(cost), 9 decimals
	AmountRounded string   `json:"amount_rounded"` // rounded to the currency's minor unit
	Currency      string   `json:"currency"`       // ISO 4217
	PeriodFrom    string   `json:"period_from"`    // RFC 3339, inclusive
	PeriodTo      string   `json:"period_to"`      // RFC 3339, exclusive
	// AdjustsExportID and AdjustsGeneratedAt name the earlier export an
	// adjustment line is the difference against; empty on other lines.
	AdjustsExportID    string `json:"adjusts_export_id"`
	AdjustsGeneratedAt string `json:"adjusts_generated_at"`

	// quantity is Quantity as the exact decimal the CSV prints; JSON has
	// the nearest float64, which encoding/json prints as the same decimal
	// up to 15 significant digits.
	quantity string
}

// setQuantity sets Quantity (JSON) and the CSV's text from the exact q.
func (l *Line) setQuantity(q decimal.Decimal) {
	f := q.InexactFloat64()
	l.Quantity, l.quantity = &f, q.String()
}

// Request selects what to export.
type Request struct {
	From, To time.Time // From inclusive, To exclusive
	Tenant   string    // optional: one tenant only
	Format   Format    // csv or json (ndjson is accepted as json)
	// NoRecord keeps an export of a closed period (To not after now) out
	// of billing_exports: a preview, which later exports do not adjust
	// against. Exports of open periods are never recorded.
	NoRecord bool
	// AdjustFrom names the earlier export of the same period to adjust
	// against. Empty: per tenant, the latest recorded export of the period
	// that covered it.
	AdjustFrom string
	// Progress, when set, is called with the number of lines written so
	// far, every ProgressEvery lines and once at the end.
	Progress func(rows int64)
	// ExportID, when set, is called with the id the export will be
	// recorded under, before the first byte is written.
	ExportID func(id string)
}

// Summary describes a finished export.
type Summary struct {
	Lines   int64           // lines written, header excluded
	Tenants int64           // tenants with at least one event
	Events  int64           // raw events covered, net of voids
	Total   decimal.Decimal // exact sum of every usage amount
	// NonFinite counts usage lines whose stored quantity sums to NaN or
	// ±Inf (rows stored before events were bounded): their quantity is
	// written empty (CSV) or null (JSON), and their amounts stay exact.
	NonFinite int64
	// ExportID is the id the export was recorded under in
	// billing_exports; empty when it was not recorded.
	ExportID string
	// Adjusted counts tenants with adjustment lines; Adjustment is the sum
	// of their adjustment_total amounts (negative: a credit).
	Adjusted   int64
	Adjustment decimal.Decimal
}

// ProgressEvery is how many rows pass between two Progress calls.
const ProgressEvery = 10000

// bufferSize is the write buffer: the only per-export memory that does not
// depend on a tenant's number of lines.
const bufferSize = 64 << 10

// Exporter runs exports against one ClickHouse database.
type Exporter struct {
	cfg Config
	db  DB
	now func() time.Time
}

// New checks cfg and returns an Exporter reading through db.
func New(cfg Config, db DB) (*Exporter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if db == nil {
		return nil, errors.New("billing: nil DB")
	}
	if !store.ValidIdent(db.Database()) {
		return nil, fmt.Errorf("billing: database name %q is not a plain identifier", db.Database())
	}
	return &Exporter{cfg: cfg, db: db, now: time.Now}, nil
}

// Close is a no-op: the Exporter owns no connection or goroutine.
func (x *Exporter) Close() error { return nil }

// Currency returns the configured currency code.
func (x *Exporter) Currency() string { return x.cfg.Currency }

func (x *Exporter) table(name string) string { return x.db.Database() + "." + name }

// Validate reports whether r is a well-formed request, wrapping ErrInvalid.
func (r Request) Validate() error {
	if err := validRange(r.From, r.To); err != nil {
		return err
	}
	if r.Tenant != "" && !event.ValidTenantID(r.Tenant) {
		return fmt.Errorf("%w: tenant: must match %s", ErrInvalid, event.TenantPattern)
	}
	switch r.Format {
	case FormatCSV, FormatJSON, FormatNDJSON:
	default:
		return fmt.Errorf("%w: format: %q must be csv or json", ErrInvalid, r.Format)
	}
	if r.AdjustFrom != "" && !validExportID(r.AdjustFrom) {
		return fmt.Errorf("%w: adjust_from: %q is not an export id", ErrInvalid, clipID(r.AdjustFrom))
	}
	return nil
}

// billingQuery aggregates the events of the period per tenant, kind and
// unit price, and nets out the corrections of those events (stored at the
// original's time and unit price). A line whose events were all voided
// disappears.
//
// Quantities are Float64 columns, and a float sum of decimals carries noise
// (0.01 + 0.29 + ... gives 287.2599999999999) that also varies with the
// order ClickHouse adds in. So each quantity is also summed exactly: its
// integer part (qi) and its fraction rounded to 9 decimals (qn, in nanos),
// each as a Decimal128. A float's fraction x - floor(x) is exact, and both
// parts are whole numbers a Decimal128 holds exactly (the collector keeps
// every quantity below 2^53). A non-finite value counts as 0 there; the
// float sum q tells such a total (NaN, ±Inf).
const billingQuery = `SELECT tenant_id, kind, unit_price,
    arrayStringConcat(arraySort(groupUniqArrayArray(versions)), '|') AS price_versions,
    sum(n) AS events, sum(q) AS quantity, sum(qi) AS quantity_units, sum(qn) AS quantity_nanos, sum(a) AS amount
FROM (
    SELECT tenant_id, kind, unit_price, groupUniqArray(price_version) AS versions,
        toInt64(count()) AS n, sum(quantity) AS q, sum(toDecimal128(floor(if(isFinite(quantity), quantity, 0)), 0)) AS qi,
        sum(toDecimal128(round((if(isFinite(quantity), quantity, 0) - floor(if(isFinite(quantity), quantity, 0))) * 1000000000), 0)) AS qn, sum(cost) AS a
    FROM %[1]s
    WHERE %[3]s%[4]s
    GROUP BY tenant_id, kind, unit_price
    UNION ALL
    SELECT tenant_id, kind, unit_price, emptyArrayString() AS versions,
        sum(delta_count) AS n, sum(delta_quantity) AS q, sum(toDecimal128(floor(if(isFinite(delta_quantity), delta_quantity, 0)), 0)) AS qi,
        sum(toDecimal128(round((if(isFinite(delta_quantity), delta_quantity, 0) - floor(if(isFinite(delta_quantity), delta_quantity, 0))) * 1000000000), 0)) AS qn, sum(delta_cost) AS a
    FROM %[2]s
    WHERE %[3]s%[4]s
    GROUP BY tenant_id, kind, unit_price
)
GROUP BY tenant_id, kind, unit_price
HAVING events != 0
ORDER BY tenant_id, kind, unit_price`

// exactQuantity is units + nanos/1e9, the exact decimal the query summed.
func exactQuantity(units, nanos decimal.Decimal) decimal.Decimal {
	return units.Add(nanos.Shift(-9))
}

// Billing writes the billing export for req to w. ClickHouse aggregates; the
// rows come back ordered by tenant, so one tenant's lines are buffered at a
// time to spread the minor-unit rounding, and everything else streams. When
// an earlier export of the same period was recorded, each tenant whose
// lines changed since gets adjustment lines after its total. An export of a
// closed period is recorded once it is written whole. On error, part of the
// export may already be written, and nothing is recorded.
func (x *Exporter) Billing(ctx context.Context, w io.Writer, req Request) (Summary, error) {
	sum := Summary{Total: decimal.Zero, Adjustment: decimal.Zero}
	if err := req.Validate(); err != nil {
		return sum, err
	}
	now := x.now().UTC()
	prev, err := x.previous(ctx, req)
	if err != nil {
		return sum, err
	}
	var rec *recorder
	if !req.NoRecord && !req.To.After(now) {
		rec = newRecorder(req, now)
		if req.ExportID != nil {
			req.ExportID(rec.id)
		}
	}
	cond, args := timeCond(req.From, req.To)
	tenantCond := ""
	if req.Tenant != "" {
		tenantCond = " AND tenant_id = ?"
		args = append(args, req.Tenant)
	}
	args = append(args, args...) // once per side of the UNION
	rows, err := x.db.Conn().Query(ctx, fmt.Sprintf(billingQuery, x.table("events"), x.table("corrections"), cond, tenantCond), args...)
	if err != nil {
		return sum, fmt.Errorf("billing query: %w", err)
	}
	defer rows.Close()

	r := &billingRun{x: x, req: req, sum: &sum, prev: prev, rec: rec, out: newLineWriter(w, req.Format),
		from: formatPeriod(req.From), to: formatPeriod(req.To)}
	if err := r.out.header(); err != nil {
		return sum, err
	}
	var cur tenantLines
	for rows.Next() {
		var (
			tenant, kind, versions string
			unit, amount           decimal.Decimal
			units, nanos           decimal.Decimal
			n                      int64
			qty                    float64
		)
		if err := rows.Scan(&tenant, &kind, &unit, &versions, &n, &qty, &units, &nanos, &amount); err != nil {
			return sum, fmt.Errorf("billing scan: %w", err)
		}
		if tenant != cur.tenant {
			if err := r.flushTenant(&cur); err != nil {
				return sum, err
			}
			cur.reset(tenant)
		}
		u := usageLine{kind: kind, unit: unit, versions: versions, events: n, qty: qty, amount: amount}
		if finite(qty) {
			u.exact = exactQuantity(units, nanos)
			u.qty = u.exact.InexactFloat64() // what billing_exports keeps: the same float every time
		}
		cur.add(u)
	}
	if err := rows.Err(); err != nil {
		return sum, fmt.Errorf("billing rows: %w", err)
	}
	if err := r.flushTenant(&cur); err != nil {
		return sum, err
	}
	if err := r.creditsBefore(""); err != nil {
		return sum, err
	}
	if err := r.out.flush(); err != nil {
		return sum, err
	}
	if rec != nil {
		if err := x.record(ctx, rec); err != nil {
			return sum, err
		}
		sum.ExportID = rec.id
	}
	if req.Progress != nil {
		req.Progress(sum.Lines)
	}
	return sum, nil
}

// usageLine is one aggregated row of the billing query, with its rounding.
type usageLine struct {
	kind     string
	unit     decimal.Decimal
	versions string
	events   int64
	qty      float64         // the quantity, NaN or ±Inf when a stored sum is not finite
	exact    decimal.Decimal // the exact quantity when qty is finite
	amount   decimal.Decimal
	rounded  decimal.Decimal
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// tenantLines are the usage lines of the tenant being exported.
type tenantLines struct {
	tenant  string
	lines   []usageLine
	total   decimal.Decimal
	rounded decimal.Decimal
	events  int64
}

func (t *tenantLines) reset(tenant string) {
	t.tenant, t.lines, t.total, t.rounded, t.events = tenant, t.lines[:0], decimal.Zero, decimal.Zero, 0
}

func (t *tenantLines) add(l usageLine) {
	t.lines = append(t.lines, l)
	t.total = t.total.Add(l.amount)
	t.events += l.events
}

// billingRun is the state of one billing export while it streams.
type billingRun struct {
	x        *Exporter
	req      Request
	sum      *Summary
	prev     *previousExports // nil: nothing to adjust against
	rec      *recorder        // nil: not recorded
	out      *lineWriter
	from, to string
	reported int64
}

// flushTenant writes a tenant's usage lines and total, then its adjustment
// lines; tenants that only the earlier export billed come first, in order.
func (r *billingRun) flushTenant(t *tenantLines) error {
	if t.tenant == "" {
		return nil
	}
	if err := r.creditsBefore(t.tenant); err != nil {
		return err
	}
	cfg := r.x.cfg
	amounts := make([]decimal.Decimal, len(t.lines))
	for i := range t.lines {
		amounts[i] = t.lines[i].amount
	}
	rounded, totalRounded := spreadRounding(amounts, cfg.MinorUnits)
	t.rounded = totalRounded
	for i := range t.lines {
		u := &t.lines[i]
		u.rounded = rounded[i]
		price := u.unit.StringFixed(9)
		l := Line{
			TenantID: t.tenant, LineType: LineUsage, Kind: u.kind, UnitPrice: &price,
			PriceVersion: u.versions, Events: u.events, Amount: u.amount.StringFixed(9),
			AmountRounded: u.rounded.StringFixed(cfg.MinorUnits), Currency: cfg.Currency, PeriodFrom: r.from, PeriodTo: r.to,
		}
		if finite(u.qty) {
			l.setQuantity(u.exact)
		} else {
			r.sum.NonFinite++
		}
		if err := r.out.line(&l); err != nil {
			return err
		}
	}
	total := Line{
		TenantID: t.tenant, LineType: LineTenantTotal, Events: t.events,
		Amount: t.total.StringFixed(9), AmountRounded: totalRounded.StringFixed(cfg.MinorUnits),
		Currency: cfg.Currency, PeriodFrom: r.from, PeriodTo: r.to,
	}
	if err := r.out.line(&total); err != nil {
		return err
	}
	r.rec.add(t)
	r.sum.Lines += int64(len(t.lines)) + 1
	r.sum.Tenants++
	r.sum.Events += t.events
	r.sum.Total = r.sum.Total.Add(t.total)
	if err := r.adjust(t); err != nil {
		return err
	}
	if r.req.Progress != nil && r.sum.Lines-r.reported >= ProgressEvery {
		r.reported = r.sum.Lines
		r.req.Progress(r.sum.Lines)
	}
	return nil
}

// spreadRounding rounds every amount to places decimals so that the rounded
// lines add up exactly to the rounded total (largest-remainder method): each
// line is floored, and the cents left over go to the lines with the largest
// remainders. The total is rounded half away from zero.
func spreadRounding(amounts []decimal.Decimal, places int32) (rounded []decimal.Decimal, total decimal.Decimal) {
	exact := decimal.Zero
	floorSum := decimal.Zero
	rounded = make([]decimal.Decimal, len(amounts))
	rem := make([]decimal.Decimal, len(amounts))
	for i, a := range amounts {
		exact = exact.Add(a)
		rounded[i] = a.RoundFloor(places)
		rem[i] = a.Sub(rounded[i])
		floorSum = floorSum.Add(rounded[i])
	}
	total = exact.Round(places)
	unit := decimal.New(1, -places)
	k := int(total.Sub(floorSum).Div(unit).IntPart())
	if k <= 0 {
		return rounded, total
	}
	order := make([]int, len(amounts))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return rem[order[a]].GreaterThan(rem[order[b]]) })
	for _, i := range order[:min(k, len(order))] {
		rounded[i] = rounded[i].Add(unit)
	}
	return rounded, total
}

// lineWriter writes billing lines as CSV or NDJSON through one buffer.
type lineWriter struct {
	bw  *bufio.Writer
	csv *csv.Writer
	enc *json.Encoder
	rec []string
}

func newLineWriter(w io.Writer, f Format) *lineWriter {
	lw := &lineWriter{bw: bufio.NewWriterSize(w, bufferSize)}
	if f == FormatCSV {
		lw.csv = csv.NewWriter(lw.bw)
		lw.rec = make([]string, len(BillingColumns))
	} else {
		lw.enc = json.NewEncoder(lw.bw)
		lw.enc.SetEscapeHTML(false)
	}
	return lw
}

func (lw *lineWriter) header() error {
	if lw.csv == nil {
		return nil
	}
	return lw.writeCSV(BillingColumns)
}

func (lw *lineWriter) writeCSV(rec []string) error {
	if err := lw.csv.Write(rec); err != nil {
		return fmt.Errorf("write export: %w", err)
	}
	return nil
}

func (lw *lineWriter) line(l *Line) error {
	if lw.csv == nil {
		if err := lw.enc.Encode(l); err != nil {
			return fmt.Errorf("write export: %w", err)
		}
		return nil
	}
	r := lw.rec
	r[0], r[1], r[2] = l.TenantID, l.LineType, l.Kind
	r[3], r[6] = "", ""
	if l.UnitPrice != nil {
		r[3] = *l.UnitPrice
	}
	switch {
	case l.quantity != "":
		r[6] = l.quantity
	case l.Quantity != nil:
		r[6] = strconv.FormatFloat(*l.Quantity, 'f', -1, 64)
	}
	r[4], r[5] = l.PriceVersion, strconv.FormatInt(l.Events, 10)
	r[7], r[8], r[9], r[10], r[11] = l.Amount, l.AmountRounded, l.Currency, l.PeriodFrom, l.PeriodTo
	r[12], r[13] = l.AdjustsExportID, l.AdjustsGeneratedAt
	return lw.writeCSV(r)
}

func (lw *lineWriter) flush() error {
	if lw.csv != nil {
		lw.csv.Flush()
		if err := lw.csv.Error(); err != nil {
			return fmt.Errorf("write export: %w", err)
		}
	}
	if err := lw.bw.Flush(); err != nil {
		return fmt.Errorf("write export: %w", err)
	}
	return nil
}
