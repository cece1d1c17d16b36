package billing

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/correct"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// recent is a closed period inside the lateness window, so its events can
// be corrected without force.
func recent() (from, to time.Time) {
	to = time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)
	return to.Add(-24 * time.Hour), to
}

func pricedRow(tenant, id, kind string, at time.Time, qty float64, unit string) store.Row {
	u := decimal.RequireFromString(unit)
	return store.Row{Event: &event.Event{ID: id, TenantID: tenant, Kind: kind, Time: at, Quantity: qty},
		Plan: "pro", UnitPrice: u, Cost: u.Mul(decimal.NewFromFloat(qty)), PriceVersion: "v1"}
}

// applyCorrections applies cs through the one Applier and fails on any
// refusal.
func applyCorrections(t *testing.T, st *store.Store, tenant string, cs ...event.Correction) {
	t.Helper()
	a, err := correct.NewApplier(correct.DefaultConfig(), st)
	if err != nil {
		t.Fatal(err)
	}
	out, err := a.Apply(context.Background(), tenant, cs)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range out.Results {
		if r.Status != event.CorrectionApplied {
			t.Fatalf("correction %s: %s %s", r.ID, r.Status, r.Error)
		}
	}
}

func voidOf(tenant, id string) event.Correction {
	return event.Correction{ID: "void-" + id, TenantID: tenant, EventID: id, Action: event.ActionVoid, Reason: "dispute", By: "ops"}
}

func amendOf(tenant, id string, q float64) event.Correction {
	return event.Correction{ID: "amend-" + id, TenantID: tenant, EventID: id, Action: event.ActionAmend, Quantity: &q, Reason: "bug", By: "ops"}
}

// billingLines exports req as NDJSON (a preview) and then as CSV (recorded
// unless req says not) and returns the CSV lines, after checking that both
// formats agree.
func billingLines(t *testing.T, x *Exporter, req Request) (Summary, []map[string]string) {
	t.Helper()
	var csvBuf, jsonBuf bytes.Buffer
	preview := req
	preview.Format, preview.NoRecord = FormatJSON, true
	if _, err := x.Billing(context.Background(), &jsonBuf, preview); err != nil {
		t.Fatal(err)
	}
	req.Format = FormatCSV
	sum, err := x.Billing(context.Background(), &csvBuf, req)
	if err != nil {
		t.Fatal(err)
	}
	_, lines := parseCSV(t, csvBuf.Bytes())
	sc := bufio.NewScanner(&jsonBuf)
	i := 0
	for sc.Scan() {
		var l Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		if i >= len(lines) || l.TenantID != lines[i]["tenant_id"] || l.LineType != lines[i]["line_type"] || l.Amount != lines[i]["amount"] ||
			l.AmountRounded != lines[i]["amount_rounded"] || l.AdjustsExportID != lines[i]["adjusts_export_id"] {
			t.Fatalf("json line %d %+v differs from csv %v", i, l, lines)
		}
		i++
	}
	if i != len(lines) {
		t.Fatalf("json has %d lines, csv %d", i, len(lines))
	}
	return sum, lines
}

func lineOf(lines []map[string]string, tenant, lineType, kind string) map[string]string {
	for _, l := range lines {
		if l["tenant_id"] == tenant && l["line_type"] == lineType && l["kind"] == kind {
			return l
		}
	}
	return nil
}

func TestBillingNetsOutCorrections(t *testing.T) {
	st := teststore.New(t)
	x := newExporter(t, st)
	from, to := recent()
	at := from.Add(time.Hour)
	insert(t, st, []store.Row{
		pricedRow("acme", "r1", event.KindAPIRequest, at, 1, "0.010000000"),
		pricedRow("acme", "r2", event.KindAPIRequest, at.Add(time.Minute), 1, "0.010000000"),
		pricedRow("acme", "t1", event.KindAITokens, at, 1000, "0.000123456"),
		pricedRow("acme", "t2", event.KindAITokens, at, 500, "0.000123456"),
		pricedRow("acme", "j1", event.KindJobRun, at, 1, "0.500000000"),
		pricedRow("globex", "g1", event.KindAPIRequest, at, 1, "0.010000000"),
	})
	applyCorrections(t, st, "acme", voidOf("acme", "r2"), amendOf("acme", "t1", 250), voidOf("acme", "j1"))

	sum, lines := billingLines(t, x, Request{From: from, To: to, NoRecord: true})
	if l := lineOf(lines, "acme", LineUsage, event.KindAPIRequest); l == nil || l["events"] != "1" || l["quantity"] != "1" || l["amount"] != "0.010000000" {
		t.Fatalf("api_request line after a void: %v", l)
	}
	// 750 tokens x 0.000123456 = 0.092592000
	if l := lineOf(lines, "acme", LineUsage, event.KindAITokens); l == nil || l["events"] != "2" || l["quantity"] != "750" || l["amount"] != "0.092592000" {
		t.Fatalf("ai_tokens line after an amendment: %v", l)
	}
	if l := lineOf(lines, "acme", LineUsage, event.KindJobRun); l != nil {
		t.Fatalf("a line whose events were all voided is still exported: %v", l)
	}
	if l := lineOf(lines, "acme", LineTenantTotal, ""); l == nil || l["events"] != "3" || l["amount"] != "0.102592000" || l["amount_rounded"] != "0.10" {
		t.Fatalf("acme total: %v", l)
	}
	if sum.Events != 4 || !sum.Total.Equal(decimal.RequireFromString("0.112592")) {
		t.Fatalf("summary: %d events, total %s", sum.Events, sum.Total)
	}

	// The per-minute rollups that the cost API and the detector read agree.
	var cost decimal.Decimal
	var n uint64
	if err := st.Conn().QueryRow(context.Background(), "SELECT sum(count), sum(cost) FROM "+st.Table("usage_1m")+
		" WHERE tenant_id = 'acme'").Scan(&n, &cost); err != nil {
		t.Fatal(err)
	}
	if n != 3 || !cost.Equal(decimal.RequireFromString("0.102592")) {
		t.Fatalf("usage_1m of acme: %d events, cost %s; want 3, 0.102592", n, cost)
	}

	// The events export bills the same: voided events left out, amended
	// ones with their new quantity and cost; AsStored keeps the originals.
	var buf bytes.Buffer
	if _, err := x.Events(context.Background(), &buf, EventsRequest{Tenant: "acme", From: from, To: to, Format: FormatCSV}); err != nil {
		t.Fatal(err)
	}
	_, evs := parseCSV(t, buf.Bytes())
	got := map[string]string{}
	for _, e := range evs {
		got[e["id"]] = e["quantity"] + "@" + e["cost"]
	}
	want := map[string]string{"r1": "1@0.010000000", "t1": "250@0.030864000", "t2": "500@0.061728000"}
	if len(got) != len(want) || got["r1"] != want["r1"] || got["t1"] != want["t1"] || got["t2"] != want["t2"] {
		t.Fatalf("events export: got %v, want %v", got, want)
	}
	buf.Reset()
	n2, err := x.Events(context.Background(), &buf, EventsRequest{Tenant: "acme", From: from, To: to, Format: FormatNDJSON, AsStored: true})
	if err != nil || n2 != 5 || !strings.Contains(buf.String(), `"id":"j1"`) {
		t.Fatalf("as stored: %d events, %v", n2, err)
	}
}
