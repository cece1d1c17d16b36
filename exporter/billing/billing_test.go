package billing

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

var (
	t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	t1 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
)

func parseCSV(t *testing.T, b []byte) (header []string, lines []map[string]string) {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil {
		t.Fatalf("parse csv: %v", err)
	}
	if len(recs) == 0 {
		t.Fatal("no header row")
	}
	for _, r := range recs[1:] {
		m := make(map[string]string, len(r))
		for i, c := range recs[0] {
			m[c] = r[i]
		}
		lines = append(lines, m)
	}
	return recs[0], lines
}

func dec(t *testing.T, s string) decimal.Decimal {
	t.Helper()
	d, err := decimal.NewFromString(s)
	if err != nil {
		t.Fatalf("decimal %q: %v", s, err)
	}
	return d
}

// rawCost is the reference: sum(cost) per tenant straight from the raw
// events, with the range written independently of timeCond (epoch millis).
func rawCost(t *testing.T, st *store.Store, from, to time.Time) map[string]decimal.Decimal {
	t.Helper()
	rows, err := st.Conn().Query(context.Background(),
		"SELECT tenant_id, sum(cost) FROM "+st.Table("events")+
			" WHERE toUInt64(time) * 1000 + time_ms >= ? AND toUInt64(time) * 1000 + time_ms < ? GROUP BY tenant_id",
		uint64(from.UnixMilli()), uint64(to.UnixMilli()))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]decimal.Decimal{}
	for rows.Next() {
		var tenant string
		var c decimal.Decimal
		if err := rows.Scan(&tenant, &c); err != nil {
			t.Fatal(err)
		}
		out[tenant] = c
	}
	return out
}

func TestBillingReconcilesToTheCent(t *testing.T) {
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) { testBillingReconciles(t, l.open(t)) })
	}
}

func testBillingReconciles(t *testing.T, st *store.Store) {
	x := newExporter(t, st)
	rows := genRows(200000, 60, t0.Add(-24*time.Hour), t1.Add(24*time.Hour), 1)
	insert(t, st, rows)

	// Cross-check the reference itself against Go decimal arithmetic.
	goSum := map[string]decimal.Decimal{}
	for _, r := range rows {
		if !r.Event.Time.Before(t0) && r.Event.Time.Before(t1) {
			goSum[r.Event.TenantID] = goSum[r.Event.TenantID].Add(r.Cost)
		}
	}
	want := rawCost(t, st, t0, t1)
	if len(want) != len(goSum) {
		t.Fatalf("raw sum has %d tenants, Go sum %d", len(want), len(goSum))
	}
	for tenant, c := range goSum {
		if !want[tenant].Equal(c) {
			t.Fatalf("%s: ClickHouse sum(cost) %s, Go sum %s", tenant, want[tenant], c)
		}
	}

	var buf bytes.Buffer
	var progress []int64
	sum, err := x.Billing(context.Background(), &buf, Request{From: t0, To: t1, Format: FormatCSV,
		Progress: func(n int64) { progress = append(progress, n) }})
	if err != nil {
		t.Fatal(err)
	}
	_, lines := parseCSV(t, buf.Bytes())
	if int64(len(lines)) != sum.Lines {
		t.Fatalf("got %d lines, summary says %d", len(lines), sum.Lines)
	}
	if len(progress) == 0 || progress[len(progress)-1] != sum.Lines {
		t.Fatalf("progress %v, want a last call with %d", progress, sum.Lines)
	}

	type acc struct {
		amount, rounded decimal.Decimal
		events          uint64
		totals          int
	}
	got := map[string]*acc{}
	grand := decimal.Zero
	for _, l := range lines {
		a := got[l["tenant_id"]]
		if a == nil {
			a = &acc{}
			got[l["tenant_id"]] = a
		}
		switch l["line_type"] {
		case LineUsage:
			a.amount = a.amount.Add(dec(t, l["amount"]))
			a.rounded = a.rounded.Add(dec(t, l["amount_rounded"]))
			var n uint64
			fmt.Sscan(l["events"], &n)
			a.events += n
			// amount = unit_price x quantity exactly, for integer quantities.
			if q, p := dec(t, l["quantity"]), dec(t, l["unit_price"]); !q.Mul(p).Equal(dec(t, l["amount"])) {
				t.Errorf("%s %s: amount %s != quantity %s x unit_price %s", l["tenant_id"], l["kind"], l["amount"], q, p)
			}
		case LineTenantTotal:
			a.totals++
			if !dec(t, l["amount"]).Equal(a.amount) {
				t.Errorf("%s: tenant_total amount %s, usage lines add to %s", l["tenant_id"], l["amount"], a.amount)
			}
			if !dec(t, l["amount_rounded"]).Equal(a.rounded) {
				t.Errorf("%s: tenant_total amount_rounded %s, rounded usage lines add to %s", l["tenant_id"], l["amount_rounded"], a.rounded)
			}
			grand = grand.Add(dec(t, l["amount"]))
		default:
			t.Fatalf("unknown line_type %q", l["line_type"])
		}
		if l["currency"] != "USD" || l["period_from"] != "2026-11-01T00:00:00Z" || l["period_to"] != "2026-12-01T00:00:00Z" {
			t.Fatalf("bad currency or period in %v", l)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("export has %d tenants, raw events %d", len(got), len(want))
	}
	rawTotal := decimal.Zero
	for tenant, w := range want {
		a := got[tenant]
		if a == nil || a.totals != 1 {
			t.Fatalf("%s: want exactly one tenant_total line", tenant)
		}
		if !a.amount.Equal(w) {
			t.Errorf("%s: exported %s, raw sum(cost) %s", tenant, a.amount, w)
		}
		if !a.rounded.Equal(w.Round(2)) {
			t.Errorf("%s: exported %s to the cent, raw sum(cost) rounds to %s", tenant, a.rounded, w.Round(2))
		}
		rawTotal = rawTotal.Add(w)
	}
	if !grand.Equal(rawTotal) || !sum.Total.Equal(rawTotal) {
		t.Fatalf("grand total %s (summary %s), raw %s", grand, sum.Total, rawTotal)
	}
	t.Logf("%d events, %d tenants, %d lines, total %s USD reconciles exactly with sum(cost)", sum.Events, sum.Tenants, sum.Lines, rawTotal)

	// JSON (NDJSON) carries the same lines.
	var jbuf bytes.Buffer
	if _, err := x.Billing(context.Background(), &jbuf, Request{From: t0, To: t1, Format: FormatJSON}); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(&jbuf)
	i := 0
	for sc.Scan() {
		var l Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		c := lines[i]
		if l.TenantID != c["tenant_id"] || l.LineType != c["line_type"] || l.Amount != c["amount"] || l.AmountRounded != c["amount_rounded"] {
			t.Fatalf("json line %d %+v differs from csv %v", i, l, c)
		}
		if (l.LineType == LineTenantTotal) != (l.UnitPrice == nil) {
			t.Fatalf("json line %d: unit_price must be null exactly on tenant_total", i)
		}
		i++
	}
	if i != len(lines) {
		t.Fatalf("json has %d lines, csv %d", i, len(lines))
	}
}

func TestBillingHeaderIsStable(t *testing.T) {
	st := teststore.New(t)
	x := newExporter(t, st)
	var buf bytes.Buffer
	sum, err := x.Billing(context.Background(), &buf, Request{From: t0, To: t1, Format: FormatCSV})
	if err != nil {
		t.Fatal(err)
	}
	// The contract in docs/billing.md: these twelve columns, in this order,
	// then only columns appended since. Changing the first twelve is a
	// breaking change.
	const contract = "tenant_id,line_type,kind,unit_price,price_version,events,quantity,amount,amount_rounded,currency,period_from,period_to"
	const want = contract + ",adjusts_export_id,adjusts_generated_at\n"
	if !strings.HasPrefix(buf.String(), contract+",") || buf.String() != want || sum.Lines != 0 {
		t.Fatalf("empty export: got %q (%d lines), want just the header %q", buf.String(), sum.Lines, want)
	}
	buf.Reset()
	if _, err := x.Billing(context.Background(), &buf, Request{From: t0, To: t1, Format: FormatJSON}); err != nil || buf.Len() != 0 {
		t.Fatalf("empty json export: got %q, %v; want nothing", buf.String(), err)
	}
}

func TestBillingRangeAndTenant(t *testing.T) {
	st := teststore.New(t)
	x := newExporter(t, st)
	at := func(tenant, id string, ts time.Time) store.Row {
		r := genRows(1, 1, t0, t1, 7)[0]
		r.Event.TenantID, r.Event.ID, r.Event.Time, r.Event.Kind, r.Event.Quantity = tenant, id, ts, "api_request", 1
		r.UnitPrice, r.Cost, r.PriceVersion = decimal.RequireFromString("0.01"), decimal.RequireFromString("0.01"), "v1"
		return r
	}
	from := t0.Add(500 * time.Millisecond)
	insert(t, st, []store.Row{
		at("a", "before", from.Add(-time.Millisecond)),
		at("a", "first", from),
		at("a", "mid", from.Add(time.Hour)),
		at("a", "last", t1.Add(-time.Millisecond)),
		at("a", "end", t1),
		at("b", "other", from.Add(time.Hour)),
	})
	for _, tc := range []struct {
		tenant     string
		wantEvents int64
		wantTotal  string
	}{{"a", 3, "0.030000000"}, {"b", 1, "0.010000000"}, {"", 4, "0.040000000"}, {"nobody", 0, "0"}} {
		var buf bytes.Buffer
		sum, err := x.Billing(context.Background(), &buf, Request{From: from, To: t1, Tenant: tc.tenant, Format: FormatCSV})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Events != tc.wantEvents || !sum.Total.Equal(decimal.RequireFromString(tc.wantTotal)) {
			t.Errorf("tenant %q: got %d events %s, want %d %s", tc.tenant, sum.Events, sum.Total, tc.wantEvents, tc.wantTotal)
		}
		_, lines := parseCSV(t, buf.Bytes())
		for _, l := range lines {
			if tc.tenant != "" && l["tenant_id"] != tc.tenant {
				t.Errorf("tenant %q export leaks a line of %q", tc.tenant, l["tenant_id"])
			}
		}
	}
}

func TestRequestValidation(t *testing.T) {
	st := teststore.New(t)
	x := newExporter(t, st)
	for _, r := range []Request{
		{To: t1, Format: FormatCSV},
		{From: t0, Format: FormatCSV},
		{From: t1, To: t0, Format: FormatCSV},
		{From: t0, To: t0, Format: FormatCSV},
		{From: t0, To: t1, Format: "xml"},
		{From: t0, To: t1, Format: FormatCSV, Tenant: "a' OR 1=1 --"},
		{From: t0, To: t1, Format: FormatCSV, Tenant: "a.b"},
		{From: time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), To: t1, Format: FormatCSV},
	} {
		if _, err := x.Billing(context.Background(), &bytes.Buffer{}, r); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: got %v, want ErrInvalid", r, err)
		}
	}
	if _, err := x.Events(context.Background(), &bytes.Buffer{}, EventsRequest{From: t0, To: t1, Format: FormatNDJSON}); !errors.Is(err, ErrInvalid) {
		t.Errorf("events without tenant: got %v, want ErrInvalid", err)
	}
}

func TestSpreadRounding(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for iter := 0; iter < 2000; iter++ {
		n := 1 + r.IntN(12)
		amounts := make([]decimal.Decimal, n)
		exact := decimal.Zero
		for i := range amounts {
			amounts[i] = decimal.New(r.Int64N(10_000_000_000), -9)
			exact = exact.Add(amounts[i])
		}
		rounded, total := spreadRounding(amounts, 2)
		if !total.Equal(exact.Round(2)) {
			t.Fatalf("total %s, want %s", total, exact.Round(2))
		}
		s := decimal.Zero
		for i, v := range rounded {
			s = s.Add(v)
			if v.Sub(amounts[i]).Abs().GreaterThanOrEqual(decimal.New(1, -2)) {
				t.Fatalf("line %s rounded to %s: off by a cent or more", amounts[i], v)
			}
			if !v.Equal(v.Round(2)) {
				t.Fatalf("%s is not whole cents", v)
			}
		}
		if !s.Equal(total) {
			t.Fatalf("%v: rounded lines add to %s, total %s", amounts, s, total)
		}
	}
}
