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
// Table names are qualified with Database().
type DB interface {
	Conn() driver.Conn
	Database() string
}

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
)

// BillingColumns is the CSV header of the billing export, in order. It is a
// contract (docs/billing.md): append new columns at the end only.
var BillingColumns = []string{
	"tenant_id", "line_type", "kind", "unit_price", "price_version", "events",
	"quantity", "amount", "amount_rounded", "currency", "period_from", "period_to",
}

// Line is one line of the billing export; its JSON form is one NDJSON line.
// Money is carried as exact decimal strings.
type Line struct {
	TenantID      string   `json:"tenant_id"`
	LineType      string   `json:"line_type"`
	Kind          string   `json:"kind"`           // empty on tenant_total
	UnitPrice     *string  `json:"unit_price"`     // null on tenant_total
	PriceVersion  string   `json:"price_version"`  // versions joined by "|"; empty on tenant_total
	Events        uint64   `json:"events"`         // number of raw events
	Quantity      *float64 `json:"quantity"`       // null on tenant_total (units differ by kind)
	Amount        string   `json:"amount"`         // exact sum(cost), 9 decimals
	AmountRounded string   `json:"amount_rounded"` // rounded to the currency's minor unit
	Currency      string   `json:"currency"`       // ISO 4217
	PeriodFrom    string   `json:"period_from"`    // RFC 3339, inclusive
	PeriodTo      string   `json:"period_to"`      // RFC 3339, exclusive
}

// Request selects what to export.
type Request struct {
	From, To time.Time // From inclusive, To exclusive
	Tenant   string    // optional: one tenant only
	Format   Format    // csv or json (ndjson is accepted as json)
	// Progress, when set, is called with the number of lines written so
	// far, every ProgressEvery lines and once at the end.
	Progress func(rows int64)
}

// Summary describes a finished export.
type Summary struct {
	Lines   int64           // lines written, header excluded
	Tenants int64           // tenants with at least one event
	Events  uint64          // raw events covered
	Total   decimal.Decimal // exact sum of every amount
	// NonFinite counts usage lines whose stored quantity sums to NaN or
	// ±Inf (rows stored before events were bounded): their quantity is
	// written empty (CSV) or null (JSON), and their amounts stay exact.
	NonFinite int64
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
	return &Exporter{cfg: cfg, db: db}, nil
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
	return nil
}

const billingQuery = `SELECT tenant_id, kind, unit_price,
    arrayStringConcat(arraySort(groupUniqArray(price_version)), '|') AS price_versions,
    count() AS events, sum(quantity) AS quantity, sum(cost) AS amount
FROM %s
WHERE %s%s
GROUP BY tenant_id, kind, unit_price
ORDER BY tenant_id, kind, unit_price`

// Billing writes the billing export for req to w. ClickHouse aggregates; the
// rows come back ordered by tenant, so one tenant's lines are buffered at a
// time to spread the minor-unit rounding, and everything else streams. On
// error, part of the export may already be written.
func (x *Exporter) Billing(ctx context.Context, w io.Writer, req Request) (Summary, error) {
	var sum Summary
	if err := req.Validate(); err != nil {
		return sum, err
	}
	cond, args := timeCond(req.From, req.To)
	tenantCond := ""
	if req.Tenant != "" {
		tenantCond = " AND tenant_id = ?"
		args = append(args, req.Tenant)
	}
	rows, err := x.db.Conn().Query(ctx, fmt.Sprintf(billingQuery, x.table("events"), cond, tenantCond), args...)
	if err != nil {
		return sum, fmt.Errorf("billing query: %w", err)
	}
	defer rows.Close()

	out := newLineWriter(w, req.Format)
	if err := out.header(); err != nil {
		return sum, err
	}
	from, to := formatPeriod(req.From), formatPeriod(req.To)
	sum.Total = decimal.Zero
	var (
		cur      string
		lines    []Line
		amounts  []decimal.Decimal
		total    decimal.Decimal
		events   uint64
		reported int64
	)
	flushTenant := func() error {
		if len(lines) == 0 {
			return nil
		}
		rounded, totalRounded := spreadRounding(amounts, x.cfg.MinorUnits)
		for i := range lines {
			lines[i].AmountRounded = rounded[i].StringFixed(x.cfg.MinorUnits)
			if err := out.line(&lines[i]); err != nil {
				return err
			}
		}
		t := Line{
			TenantID: cur, LineType: LineTenantTotal, Events: events,
			Amount: total.StringFixed(9), AmountRounded: totalRounded.StringFixed(x.cfg.MinorUnits),
			Currency: x.cfg.Currency, PeriodFrom: from, PeriodTo: to,
		}
		if err := out.line(&t); err != nil {
			return err
		}
		sum.Lines += int64(len(lines)) + 1
		sum.Tenants++
		sum.Events += events
		sum.Total = sum.Total.Add(total)
		if req.Progress != nil && sum.Lines-reported >= ProgressEvery {
			reported = sum.Lines
			req.Progress(sum.Lines)
		}
		lines, amounts = lines[:0], amounts[:0]
		total, events = decimal.Zero, 0
		return nil
	}
	for rows.Next() {
		var (
			tenant, kind, versions string
			unit, amount           decimal.Decimal
			n                      uint64
			qty                    float64
		)
		if err := rows.Scan(&tenant, &kind, &unit, &versions, &n, &qty, &amount); err != nil {
			return sum, fmt.Errorf("billing scan: %w", err)
		}
		if tenant != cur {
			if err := flushTenant(); err != nil {
				return sum, err
			}
			cur = tenant
		}
		price := unit.StringFixed(9)
		var q *float64
		if math.IsNaN(qty) || math.IsInf(qty, 0) {
			sum.NonFinite++
		} else {
			q = &qty
		}
		lines = append(lines, Line{
			TenantID: tenant, LineType: LineUsage, Kind: kind, UnitPrice: &price,
			PriceVersion: versions, Events: n, Quantity: q, Amount: amount.StringFixed(9),
			Currency: x.cfg.Currency, PeriodFrom: from, PeriodTo: to,
		})
		amounts = append(amounts, amount)
		total = total.Add(amount)
		events += n
	}
	if err := rows.Err(); err != nil {
		return sum, fmt.Errorf("billing rows: %w", err)
	}
	if err := flushTenant(); err != nil {
		return sum, err
	}
	if err := out.flush(); err != nil {
		return sum, err
	}
	if req.Progress != nil {
		req.Progress(sum.Lines)
	}
	return sum, nil
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
	if l.Quantity != nil {
		r[6] = strconv.FormatFloat(*l.Quantity, 'f', -1, 64)
	}
	r[4], r[5] = l.PriceVersion, strconv.FormatUint(l.Events, 10)
	r[7], r[8], r[9], r[10], r[11] = l.Amount, l.AmountRounded, l.Currency, l.PeriodFrom, l.PeriodTo
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
