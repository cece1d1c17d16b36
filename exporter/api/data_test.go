package api

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/exporter/billing"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

func TestUsageAndCost(t *testing.T) {
	st := teststore.New(t)
	seed(t, st) // acme: 240 events, one every 30 s from t0, 1000 tokens at 0.000123456, every 10th an error
	f := start(t, st, testConfig())
	r := get(t, f.url+"/api/v1/tenants/acme/usage?"+rng+"&window=hour", bearer("acme"))
	var body struct {
		Items []usageBucket `json:"items"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || r.status != 200 {
		t.Fatalf("%d %s %v", r.status, r.body, err)
	}
	if len(body.Items) != 2 {
		t.Fatalf("got %d hourly buckets, want 2: %s", len(body.Items), r.body)
	}
	for i, b := range body.Items {
		if !b.Time.Equal(t0.Add(time.Duration(i)*time.Hour)) || b.Kind != "ai_tokens" || b.Events != 120 ||
			b.Quantity == nil || *b.Quantity != 120000 || b.Cost != "14.814720000" || b.Errors != 12 || b.LatencyP95 == nil {
			t.Errorf("bucket %d: got %+v", i, b)
		}
	}
	// minute window, paged
	r = get(t, f.url+"/api/v1/tenants/acme/usage?"+rng+"&window=minute&limit=100", bearer("billing"))
	var mins struct {
		Items      []usageBucket `json:"items"`
		NextCursor string        `json:"next_cursor"`
	}
	if err := json.Unmarshal(r.body, &mins); err != nil || len(mins.Items) != 100 || mins.NextCursor == "" || mins.Items[0].Events != 2 {
		t.Fatalf("minute window: %d items, cursor %q, %v", len(mins.Items), mins.NextCursor, err)
	}
	r = get(t, f.url+"/api/v1/tenants/acme/cost?"+rng, bearer("acme"))
	var cost struct {
		Total    string     `json:"total"`
		Currency string     `json:"currency"`
		Items    []kindCost `json:"items"`
	}
	if err := json.Unmarshal(r.body, &cost); err != nil || cost.Total != "29.629440000" || cost.Currency != "USD" || len(cost.Items) != 1 {
		t.Fatalf("cost: %s %v", r.body, err)
	}
	r = get(t, f.url+"/api/v1/costs?"+rng+"&order=cost_desc", bearer("billing"))
	if !strings.Contains(string(r.body), `{"tenant_id":"acme","events":240,"cost":"29.629440000"}`) {
		t.Fatalf("costs: %s", r.body)
	}
}

// TestBillingExportOverAPIReconciles checks the API stream equals the
// library's export and reconciles to the cent with sum(cost).
func TestBillingExportOverAPIReconciles(t *testing.T) {
	st := teststore.New(t)
	seed(t, st)
	f := start(t, st, testConfig())
	r := get(t, f.url+"/api/v1/billing/export?"+rng, bearer("billing"))
	if r.status != 200 || r.header.Get("Content-Type") != "text/csv; charset=utf-8" ||
		!strings.HasPrefix(r.header.Get("Content-Disposition"), `attachment; filename="billing-20261101T000000Z-20261102T000000Z.csv"`) {
		t.Fatalf("%d %v", r.status, r.header)
	}
	recs, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(recs[0], ",") != strings.Join(billing.BillingColumns, ",") {
		t.Fatalf("header %v", recs[0])
	}
	var raw decimal.Decimal
	if err := st.Conn().QueryRow(context.Background(), "SELECT sum(cost) FROM "+st.Table("events")).Scan(&raw); err != nil {
		t.Fatal(err)
	}
	got := decimal.Zero
	for _, rec := range recs[1:] {
		if rec[1] == billing.LineTenantTotal {
			got = got.Add(decimal.RequireFromString(rec[8]))
		}
	}
	if !got.Equal(raw.Round(2)) || raw.IsZero() {
		t.Fatalf("tenant totals add to %s, raw sum(cost) rounds to %s", got, raw.Round(2))
	}
	r = get(t, f.url+"/api/v1/billing/export?"+rng+"&format=json", bearer("admin"))
	if r.header.Get("Content-Type") != "application/x-ndjson" || bytes.Count(r.body, []byte("\n")) != len(recs)-1 {
		t.Fatalf("json export: %v, %d lines, want %d", r.header, bytes.Count(r.body, []byte("\n")), len(recs)-1)
	}
}

// flushRecorder records how a handler hands bytes to the client.
type flushRecorder struct {
	*httptest.ResponseRecorder
	pending  int
	maxChunk int
	flushes  int
}

func (f *flushRecorder) Write(p []byte) (int, error) {
	f.pending += len(p)
	return f.ResponseRecorder.Write(p)
}

func (f *flushRecorder) Flush() {
	f.maxChunk = max(f.maxChunk, f.pending)
	f.pending = 0
	f.flushes++
	f.ResponseRecorder.Flush()
}

func TestExportsFlushProgressively(t *testing.T) {
	st := teststore.New(t)
	var rows []store.Row
	big := strings.Repeat("r", 200)
	for i := 0; i < 20000; i++ {
		r := oneRow("acme", i)
		r.Event.Route = big
		rows = append(rows, r)
	}
	if err := st.InsertEvents(context.Background(), rows, time.Now()); err != nil {
		t.Fatal(err)
	}
	f := start(t, st, testConfig())
	rec := &flushRecorder{ResponseRecorder: httptest.NewRecorder()}
	req := httptest.NewRequest("GET", "/api/v1/tenants/acme/events?"+rng, nil)
	req.Header.Set("Authorization", bearer("acme"))
	f.srv.Handler().ServeHTTP(rec, req)
	n := rec.Body.Len()
	if rec.Code != 200 || bytes.Count(rec.Body.Bytes(), []byte("\n")) != 20000 {
		t.Fatalf("got %d with %d lines", rec.Code, bytes.Count(rec.Body.Bytes(), []byte("\n")))
	}
	// The body left in chunks of at most the 64 KiB buffer, not at the end.
	if rec.maxChunk > 64<<10 || rec.flushes < n/(64<<10) {
		t.Fatalf("%d bytes in %d flushes, largest unflushed run %d bytes: not streaming", n, rec.flushes, rec.maxChunk)
	}
	t.Logf("%d bytes in %d flushes, largest chunk %d", n, rec.flushes, rec.maxChunk)
}

func oneRow(tenant string, i int) store.Row {
	r := store.Row{Plan: "pro", UnitPrice: decimal.RequireFromString("0.001"), Cost: decimal.RequireFromString("0.001"), PriceVersion: "v1"}
	r.Event = &eventT{ID: tenant + "-" + itoa(i), TenantID: tenant, Kind: "api_request", Time: t0.Add(time.Duration(i) * time.Second), Quantity: 1}
	return r
}

func TestReadyzAndShutdown(t *testing.T) {
	srv := testenv.NewClickHouseServer(t)
	db := srv.NewDatabase(t)
	cfg := store.DefaultConfig()
	cfg.Addr, cfg.Database = []string{srv.Addr}, db
	cfg.DialTimeout = time.Second
	st, err := store.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	exp, _ := billing.New(billing.DefaultConfig(), st)
	var natsDown atomic.Bool
	extra := func(context.Context) error {
		if natsDown.Load() {
			return errors.New("nats: not connected")
		}
		return nil
	}
	s, err := New(testConfig(), Deps{DB: st, Exporter: exp, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Ready: []func(context.Context) error{extra}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	base := "http://" + s.Addr()
	if r := get(t, base+"/readyz", ""); r.status != http.StatusOK || string(r.body) != `{"status":"ready"}`+"\n" {
		t.Fatalf("readyz with ClickHouse up: %d %q", r.status, r.body)
	}
	natsDown.Store(true)
	if r := get(t, base+"/readyz", ""); r.status != http.StatusServiceUnavailable || string(r.body) != `{"status":"not ready","error":"nats: not connected","failing":["nats: not connected"]}`+"\n" {
		t.Fatalf("readyz with a failing check got %d %q, want 503 naming the check", r.status, r.body)
	}
	srv.Kill()
	if r := get(t, base+"/readyz", ""); r.status != http.StatusServiceUnavailable || string(r.body) != `{"status":"not ready","error":"clickhouse: not reachable; nats: not connected","failing":["clickhouse: not reachable","nats: not connected"]}`+"\n" {
		t.Fatalf("readyz with ClickHouse down got %d %q, want 503 with one line per failing check", r.status, r.body)
	}
	if r := get(t, base+"/healthz", ""); r.status != http.StatusOK {
		t.Fatalf("healthz with ClickHouse down: %d, want 200 (liveness does not depend on it)", r.status)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
