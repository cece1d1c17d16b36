package backfill

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func book(t testing.TB) *pricing.Book {
	t.Helper()
	c := pricing.DefaultConfig()
	c.Version = "2026-11"
	c.Prices = map[string]string{event.KindAPIRequest: "0.0001", event.KindAITokens: "0.000002"}
	v, _ := event.NewValidator(event.Rules{})
	b, err := pricing.New(c, v.KnownKind)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newImporter(t testing.TB, st *store.Store, mod func(*Config)) *Importer {
	t.Helper()
	cfg := DefaultConfig()
	cfg.BatchRows = 1000
	if mod != nil {
		mod(&cfg)
	}
	im, err := New(cfg, st, book(t))
	if err != nil {
		t.Fatal(err)
	}
	return im
}

// ndjson writes n wire-format events over tenants, the last day.
func ndjson(n, tenants int) []byte {
	var buf []byte
	base := time.Now().UTC().Add(-24 * time.Hour).Truncate(time.Millisecond)
	for i := range n {
		e := event.Event{ID: fmt.Sprintf("ev-%07d", i), TenantID: fmt.Sprintf("t%03d", i%tenants), Kind: event.KindAITokens,
			Time: base.Add(time.Duration(i) * 10 * time.Millisecond), Quantity: float64(1 + i%500), Service: "svc",
			LatencyMs: 12.5, StatusCode: 200, Attrs: map[string]string{"model": "m1"}}
		buf = event.AppendJSON(buf, &e)
		buf = append(buf, '\n')
	}
	return buf
}

func stored(t testing.TB, st *store.Store) (events, usage uint64, cost decimal.Decimal) {
	t.Helper()
	ctx := context.Background()
	if err := st.Conn().QueryRow(ctx, "SELECT count(), sum(cost) FROM "+st.Table("events")).Scan(&events, &cost); err != nil {
		t.Fatal(err)
	}
	if err := st.Conn().QueryRow(ctx, "SELECT sum(count) FROM "+st.Table("usage_1m")).Scan(&usage); err != nil {
		t.Fatal(err)
	}
	return events, usage, cost
}

func TestImportTwiceAddsNothing(t *testing.T) {
	st := teststore.New(t)
	im := newImporter(t, st, nil)
	input := ndjson(5000, 7)
	var progress []Progress
	sum, err := im.Import(context.Background(), bytes.NewReader(input), FormatAuto, func(p Progress) { progress = append(progress, p) })
	if err != nil {
		t.Fatal(err)
	}
	if sum.Read != 5000 || sum.Stored != 5000 || sum.Duplicates != 0 || sum.Rejected != 0 || sum.Bytes != int64(len(input)) {
		t.Fatalf("first import: %+v", sum)
	}
	if len(progress) != 5 || progress[4].Stored != 5000 || progress[4].Read != 5000 {
		t.Fatalf("progress: %+v, want 5 batches ending at 5000", progress)
	}
	n, u, cost := stored(t, st)
	// Quantities 1..500, ten times each, at 0.000002: 10 x 125250 x 0.000002.
	if n != 5000 || u != 5000 || !cost.Equal(decimal.RequireFromString("2.505")) {
		t.Fatalf("after the first import: %d events, usage_1m %d, cost %s", n, u, cost)
	}
	var version, plan string
	if err := st.Conn().QueryRow(context.Background(), "SELECT any(price_version), any(plan) FROM "+st.Table("events")).Scan(&version, &plan); err != nil || version != "2026-11" || plan != "default" {
		t.Fatalf("priced with %q %q, %v", version, plan, err)
	}

	sum, err = im.Import(context.Background(), bytes.NewReader(input), FormatNDJSON, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Read != 5000 || sum.Stored != 0 || sum.Duplicates != 5000 {
		t.Fatalf("second import: %+v, want every event a duplicate", sum)
	}
	if n2, u2, _ := stored(t, st); n2 != 5000 || u2 != 5000 {
		t.Fatalf("after the second import: %d events, usage_1m %d, want 5000 each", n2, u2)
	}
}

func TestImportRejectsLinesAndStoresTheRest(t *testing.T) {
	st := teststore.New(t)
	now := time.Now().UTC().Truncate(time.Second)
	ok := func(id string) string {
		return fmt.Sprintf(`{"id":%q,"tenant_id":"acme","kind":"api_request","time":%q}`, id, now.Add(-time.Hour).Format(time.RFC3339))
	}
	old := now.Add(-30 * 24 * time.Hour).Format(time.RFC3339)
	lines := []string{
		ok("a1"), // 1
		`{"id":"b1","tenant_id":"acme","kind":"api_request","time":`, // 2: truncated
		"", // 3: blank
		`{"id":"b2","tenant_id":"acme","kind":"teleport","time":"` + now.Format(time.RFC3339) + `"}`, // 4
		`{"id":"b3","tenant_id":"acme","kind":"api_request","time":"` + old + `"}`,                   // 5: too late
		ok("a2"), // 6
		ok("a1"), // 7: repeated in the file
		`{"id":"b4","tenant_id":"acme.prod","kind":"api_request","time":"` + now.Format(time.RFC3339) + `"}`,                                              // 8
		`{"id":"b5","tenant_id":"acme","kind":"api_request","time":"` + now.Format(time.RFC3339) + `","quantity":-1}`,                                     // 9
		`{"id":"b6","tenant_id":"acme","kind":"api_request","time":"` + now.Format(time.RFC3339) + `","attrs":{"x":"` + strings.Repeat("y", 9000) + `"}}`, // 10
		`{"id":"b7","tenant_id":"acme","kind":"api_request","time":"` + now.Format(time.RFC3339) + `","x":` + strings.Repeat("[", 300<<10) + `}`,          // 11: far past the buffer
		ok("a3"), // 12, no final newline
	}
	input := strings.Join(lines, "\n")
	im := newImporter(t, st, func(c *Config) { c.BatchRows = 2 })
	sum, err := im.Import(context.Background(), strings.NewReader(input), FormatNDJSON, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Read != 11 || sum.Stored != 3 || sum.Duplicates != 1 || sum.Rejected != 7 {
		t.Fatalf("summary: %+v", sum)
	}
	var got []string
	for _, e := range sum.Errors {
		got = append(got, fmt.Sprintf("%d:%s", e.Line, e.Reason))
	}
	want := "2:invalid_json 4:unknown_kind 5:too_late 8:bad_tenant_id 9:bad_quantity 10:too_large 11:too_large"
	if strings.Join(got, " ") != want {
		t.Fatalf("rejections: got %s, want %s", strings.Join(got, " "), want)
	}
	if sum.Reasons["too_large"] != 2 || sum.Reasons["invalid_json"] != 1 {
		t.Fatalf("reasons: %v", sum.Reasons)
	}
	var ids []string
	rows, err := st.Conn().Query(context.Background(), "SELECT id FROM "+st.Table("events")+" ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		_ = rows.Scan(&id)
		ids = append(ids, id)
	}
	rows.Close()
	if strings.Join(ids, ",") != "a1,a2,a3" {
		t.Fatalf("stored ids %v, want a1 a2 a3: nothing of a rejected line", ids)
	}

	// With AllowOlder, the old event goes in (and only it: the rest is
	// stored already or still invalid).
	older := newImporter(t, st, func(c *Config) { c.AllowOlder = true })
	sum, err = older.Import(context.Background(), strings.NewReader(input), FormatNDJSON, nil)
	if err != nil || sum.Stored != 1 || sum.Rejected != 6 {
		t.Fatalf("allow older: %+v %v", sum, err)
	}
}

func TestImportCSV(t *testing.T) {
	st := teststore.New(t)
	at := time.Now().UTC().Add(-time.Hour).Format("2006-01-02T15:04:05.000Z07:00")
	csv := "id,tenant_id,kind,time,quantity,service,route,user_id,latency_ms,status_code,error,attrs,plan,unit_price,cost,price_version\n" +
		"c1,acme,ai_tokens," + at + ",1500,svc,\"POST /v1/chat, stream\",u1,12.5,200,false,\"{\"\"model\"\":\"\"m1\"\"}\",pro,9,9,old\n" +
		"c2,acme,api_request," + at + ",,,,,,,,,,,,\n" +
		"c3,acme,api_request," + at + ",NaN,,,,,,,,,,,\n" +
		"c4,acme,api_request," + at + ",1,,,,,2e2,,,,,,\n" +
		"c5,acme,api_request," + at + ",1,,,,,,maybe,,,,,\n" +
		"c6,acme,api_request," + at + ",1,,,,,,,\"{\"\"n\"\":1}\",,,,\n" +
		"c7,acme,api_request\n" +
		"c8,acme,api_request,yesterday,1,,,,,,,,,,,\n"
	im := newImporter(t, st, nil)
	sum, err := im.Import(context.Background(), strings.NewReader(csv), FormatAuto, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range sum.Errors {
		got = append(got, fmt.Sprintf("%d:%s", e.Line, e.Reason))
	}
	want := "4:wrong_type 5:bad_field 6:wrong_type 7:bad_attrs 8:invalid_csv 9:bad_time"
	if sum.Stored != 2 || strings.Join(got, " ") != want {
		t.Fatalf("csv: stored %d, rejections %s, want 2 and %s", sum.Stored, strings.Join(got, " "), want)
	}
	var route, model string
	var qty float64
	var cost decimal.Decimal
	if err := st.Conn().QueryRow(context.Background(), "SELECT route, attrs_values[1], quantity, cost FROM "+st.Table("events")+" WHERE id = 'c1'").
		Scan(&route, &model, &qty, &cost); err != nil {
		t.Fatal(err)
	}
	// Priced again from the book, not from the file's columns.
	if route != "POST /v1/chat, stream" || model != "m1" || qty != 1500 || !cost.Equal(decimal.RequireFromString("0.003")) {
		t.Fatalf("c1 stored as %q %q %v %s", route, model, qty, cost)
	}
	var q2 float64
	if err := st.Conn().QueryRow(context.Background(), "SELECT quantity FROM "+st.Table("events")+" WHERE id = 'c2'").Scan(&q2); err != nil || q2 != 1 {
		t.Fatalf("c2: an empty quantity is 1, got %v %v", q2, err)
	}
	if _, err := im.Import(context.Background(), strings.NewReader("id,tenant_id,when\n"), FormatCSV, nil); err == nil ||
		!strings.Contains(err.Error(), "kind, time") {
		t.Fatalf("a header without kind and time: got %v", err)
	}
}

// BenchmarkImport imports 1M events (200 tenants, one day) from NDJSON in
// memory into a fresh database, with the dedup lookup on, and then the
// same input again (every event a duplicate). It reports events/s of each:
// the goal is at least the live ingest rate (tenantguard bench ingest).
func BenchmarkImport(b *testing.B) {
	const n = 1_000_000
	input := ndjson(n, 200)
	b.SetBytes(int64(len(input)))
	b.ReportAllocs()
	b.ResetTimer()
	var first, again time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		st := teststore.New(b)
		im := newImporter(b, st, func(c *Config) { c.BatchRows = DefaultConfig().BatchRows })
		b.StartTimer()
		start := time.Now()
		sum, err := im.Import(context.Background(), bytes.NewReader(input), FormatNDJSON, nil)
		first += time.Since(start)
		if err != nil || sum.Stored != n {
			b.Fatalf("import: %+v %v", sum, err)
		}
		start = time.Now()
		sum, err = im.Import(context.Background(), bytes.NewReader(input), FormatNDJSON, nil)
		again += time.Since(start)
		if err != nil || sum.Stored != 0 || sum.Duplicates != n {
			b.Fatalf("second import: %+v %v", sum, err)
		}
	}
	b.ReportMetric(float64(n*b.N)/first.Seconds(), "events/s")
	b.ReportMetric(float64(n*b.N)/again.Seconds(), "rerun-events/s")
}
