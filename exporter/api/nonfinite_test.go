package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// TestNonFiniteStoredSumsAnswerEveryReader stores what a release without
// numeric bounds let through: two events of quantity 1e308 in one minute,
// whose sum is +Inf. The tenant's usage and cost must still answer JSON
// (quantity null, cost exact), and the billing export must answer for every
// tenant, in both formats, with no +Inf in it.
func TestNonFiniteStoredSumsAnswerEveryReader(t *testing.T) {
	st := teststore.New(t)
	seed(t, st)
	unit := decimal.RequireFromString("0.000000001")
	var rows []store.Row
	for i := range 2 {
		e := &event.Event{ID: fmt.Sprintf("inf-%d", i), TenantID: "poison", Kind: "api_request",
			Time: t0.Add(time.Minute), Quantity: 1e308, LatencyMs: 1e308}
		rows = append(rows, store.Row{Event: e, Plan: "pro", UnitPrice: unit, Cost: decimal.RequireFromString("1.5"), PriceVersion: "v1"})
	}
	if err := st.InsertEvents(context.Background(), rows, time.Now()); err != nil {
		t.Fatal(err)
	}
	f := start(t, st, testConfig())
	rng := "from=" + t0.Format(time.RFC3339) + "&to=" + t1.Format(time.RFC3339)

	for _, path := range []string{"/api/v1/tenants/poison/usage?" + rng, "/api/v1/tenants/poison/cost?" + rng} {
		r := get(t, f.url+path, bearer("admin"))
		var body struct {
			Items []struct {
				Quantity *float64 `json:"quantity"`
				Cost     string   `json:"cost"`
			} `json:"items"`
		}
		if r.status != 200 || json.Unmarshal(r.body, &body) != nil {
			t.Fatalf("%s: got %d %q, want 200 with a JSON body", path, r.status, r.body)
		}
		if len(body.Items) != 1 || body.Items[0].Quantity != nil || body.Items[0].Cost != "3.000000000" {
			t.Errorf("%s: got %s, want one item with quantity null and cost 3.000000000", path, r.body)
		}
	}

	r := get(t, f.url+"/api/v1/billing/export?format=json&"+rng, bearer("billing"))
	if r.status != 200 || bytes.Contains(r.body, []byte("Inf")) {
		t.Fatalf("billing json: got %d %q, want 200 without Inf", r.status, r.body)
	}
	tenants := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	for sc.Scan() {
		var l struct {
			TenantID string   `json:"tenant_id"`
			LineType string   `json:"line_type"`
			Quantity *float64 `json:"quantity"`
		}
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("billing json line %q: %v", sc.Bytes(), err)
		}
		tenants[l.TenantID] = true
		if l.TenantID == "poison" && l.LineType == "usage" && l.Quantity != nil {
			t.Errorf("poison usage line quantity: got %v, want null", *l.Quantity)
		}
	}
	if !tenants["acme"] || !tenants["globex"] || !tenants["poison"] {
		t.Errorf("billing json covered %v, want acme, globex and poison", tenants)
	}

	r = get(t, f.url+"/api/v1/billing/export?format=csv&"+rng, bearer("billing"))
	recs, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if r.status != 200 || err != nil || strings.Contains(string(r.body), "Inf") {
		t.Fatalf("billing csv: got %d %v %q, want 200 without Inf", r.status, err, r.body)
	}
	if len(recs) < 4 {
		t.Errorf("billing csv: got %d records, want a header and lines for three tenants", len(recs))
	}
}
