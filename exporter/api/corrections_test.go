package api

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/collector/correct"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/exporter/billing"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// TestCorrectionsInEveryAPIOutput voids one acme event (an error event) and
// amends another from 1000 to 500 tokens, and reads usage, cost, costs and
// the billing export back.
func TestCorrectionsInEveryAPIOutput(t *testing.T) {
	st := teststore.New(t)
	seed(t, st) // acme: 240 events of 1000 tokens at 0.000123456, every 10th an error
	a, err := correct.NewApplier(correct.DefaultConfig(), st)
	if err != nil {
		t.Fatal(err)
	}
	half := 500.0
	out, err := a.Apply(context.Background(), "acme", []event.Correction{
		{ID: "c1", TenantID: "acme", EventID: "acme-0", Action: event.ActionVoid, Reason: "dispute", By: "finance", Force: true},
		{ID: "c2", TenantID: "acme", EventID: "acme-1", Action: event.ActionAmend, Quantity: &half, Reason: "bug", By: "finance", Force: true},
	})
	if err != nil || out.Refused() != 0 {
		t.Fatalf("apply: %+v %v", out.Results, err)
	}
	f := start(t, st, testConfig())

	r := get(t, f.url+"/api/v1/tenants/acme/usage?"+rng+"&window=hour", bearer("acme"))
	var usage struct {
		Items []usageBucket `json:"items"`
	}
	if err := json.Unmarshal(r.body, &usage); err != nil || len(usage.Items) != 2 {
		t.Fatalf("usage: %s %v", r.body, err)
	}
	// 1000 + 500 tokens less in the first hour: 0.185184 of cost.
	if b := usage.Items[0]; b.Events != 119 || b.Quantity == nil || *b.Quantity != 118500 || b.Cost != "14.629536000" || b.Errors != 11 {
		t.Fatalf("first hour: got %+v", b)
	}
	if b := usage.Items[1]; b.Events != 120 || b.Cost != "14.814720000" {
		t.Fatalf("second hour changed: %+v", b)
	}
	r = get(t, f.url+"/api/v1/tenants/acme/cost?"+rng, bearer("acme"))
	var cost struct {
		Total string `json:"total"`
	}
	if err := json.Unmarshal(r.body, &cost); err != nil || cost.Total != "29.444256000" {
		t.Fatalf("cost: %s %v", r.body, err)
	}
	r = get(t, f.url+"/api/v1/costs?"+rng, bearer("billing"))
	if !strings.Contains(string(r.body), `{"tenant_id":"acme","events":239,"cost":"29.444256000"}`) ||
		!strings.Contains(string(r.body), `{"tenant_id":"globex","events":240,"cost":"29.629440000"}`) {
		t.Fatalf("costs: %s", r.body)
	}

	// The billing export of the closed day nets them out too, and is
	// recorded under the id in its header; a preview is not.
	r = get(t, f.url+"/api/v1/billing/export?"+rng+"&tenant=acme&record=false", bearer("billing"))
	if r.status != 200 || r.header.Get(HeaderExportID) != "" {
		t.Fatalf("preview: %d, export id %q", r.status, r.header.Get(HeaderExportID))
	}
	r = get(t, f.url+"/api/v1/billing/export?"+rng+"&tenant=acme", bearer("billing"))
	id := r.header.Get(HeaderExportID)
	recs, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil || len(recs) != 3 || recs[2][1] != billing.LineTenantTotal || recs[2][5] != "239" || recs[2][7] != "29.444256000" || id == "" {
		t.Fatalf("billing export (id %q): %v %v", id, recs, err)
	}
	var n uint64
	if err := st.Conn().QueryRow(context.Background(), "SELECT count() FROM "+st.Table("billing_exports")+" WHERE export_id = ?", id).Scan(&n); err != nil || n != 3 {
		t.Fatalf("recorded rows of %s: %d %v, want 3 (export, usage, total)", id, n, err)
	}
	r = get(t, f.url+"/api/v1/billing/export?"+rng+"&adjust_from=nope", bearer("billing"))
	if r.status != 400 || !strings.Contains(string(r.body), "adjust_from") {
		t.Fatalf("bad adjust_from: %d %s", r.status, r.body)
	}
}
