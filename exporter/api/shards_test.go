package api

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// TestAPIReadsEveryShard serves the API from a two-shard cluster: costs,
// usage and the anomaly and finding lists read the Distributed tables, so
// every tenant answers whatever its shard, and FINAL keeps one version of
// each episode and finding although the versions were separate inserts.
func TestAPIReadsEveryShard(t *testing.T) {
	st, c := teststore.Sharded(t)
	ctx := context.Background()
	const tenants = 16
	unit := decimal.RequireFromString("0.000123456")
	var rows []store.Row
	for ti := 0; ti < tenants; ti++ {
		tenant := fmt.Sprintf("t%02d", ti)
		for i := 0; i <= ti; i++ { // tenant ti has ti+1 events
			e := &event.Event{ID: fmt.Sprintf("%s-%d", tenant, i), TenantID: tenant, Kind: event.KindAITokens,
				Time: t0.Add(time.Duration(i) * time.Minute), Quantity: 1000, LatencyMs: 10, StatusCode: 200}
			rows = append(rows, store.Row{Event: e, Plan: "pro", UnitPrice: unit, Cost: unit.Mul(decimal.NewFromInt(1000)), PriceVersion: "v1"})
		}
	}
	if err := st.InsertEvents(ctx, rows, time.Now()); err != nil {
		t.Fatal(err)
	}
	for v := 1; v <= 3; v++ { // three versions of each episode and finding, one insert each
		var an []store.AnomalyRow
		for ti := 0; ti < tenants; ti++ {
			an = append(an, store.AnomalyRow{Fingerprint: "fp", TenantID: fmt.Sprintf("t%02d", ti), Metric: "events_rate",
				Status: "firing", Severity: "critical", Observed: float64(v), Baseline: 1, Ratio: float64(v),
				StartsAt: t0.Add(time.Hour), EndsAt: time.Unix(0, 0).UTC(), UpdatedAt: t0.Add(time.Hour + time.Duration(v)*time.Minute)})
		}
		if err := st.InsertAnomalies(ctx, an); err != nil {
			t.Fatal(err)
		}
		var fs []store.FindingRow
		for q := int64(0); q < 8; q++ {
			fs = append(fs, store.FindingRow{Database: "app", QueryID: q, UserID: 10, Role: "app_rw", Query: "SELECT 1",
				Class: "unscoped", Calls: uint64(v), TotalExecTimeMs: float64(q), FirstSeen: t0, LastSeen: t0.Add(time.Hour),
				ObservedAt: t0.Add(time.Duration(v) * time.Minute)})
		}
		if err := st.InsertFindings(ctx, fs); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range c.Shards {
		var n uint64
		if err := s.Conn(t, "default").QueryRow(ctx, "SELECT count() FROM "+st.Table("anomalies_local")).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatalf("shard %d holds no anomalies; want the tenants spread over both", i+1)
		}
	}
	f := start(t, st, testConfig())

	r := get(t, f.url+"/api/v1/costs?"+rng+"&limit=1000", bearer("billing"))
	var costs struct {
		Items []tenantCostItem `json:"items"`
	}
	if err := json.Unmarshal(r.body, &costs); err != nil || r.status != 200 {
		t.Fatalf("costs: %d %s %v", r.status, r.body, err)
	}
	if len(costs.Items) != tenants {
		t.Fatalf("costs: got %d tenants, want %d", len(costs.Items), tenants)
	}
	for ti, it := range costs.Items {
		want := unit.Mul(decimal.NewFromInt(int64(1000 * (ti + 1)))).StringFixed(9)
		if it.TenantID != fmt.Sprintf("t%02d", ti) || it.Events != uint64(ti+1) || it.Cost != want {
			t.Errorf("costs item %d: got %+v, want t%02d with %d events costing %s", ti, it, ti, ti+1, want)
		}
	}
	for ti := 0; ti < tenants; ti++ {
		r := get(t, f.url+"/api/v1/tenants/"+fmt.Sprintf("t%02d", ti)+"/usage?"+rng+"&window=day", bearer("billing"))
		var body struct {
			Items []usageBucket `json:"items"`
		}
		if err := json.Unmarshal(r.body, &body); err != nil || r.status != 200 {
			t.Fatalf("usage: %d %s %v", r.status, r.body, err)
		}
		if len(body.Items) != 1 || body.Items[0].Events != uint64(ti+1) {
			t.Errorf("t%02d usage: got %+v, want one day of %d events", ti, body.Items, ti+1)
		}
	}

	r = get(t, f.url+"/api/v1/anomalies?"+rng+"&limit=1000", bearer("admin"))
	var an struct {
		Items []anomaly `json:"items"`
	}
	if err := json.Unmarshal(r.body, &an); err != nil || r.status != 200 {
		t.Fatalf("anomalies: %d %s %v", r.status, r.body, err)
	}
	if len(an.Items) != tenants {
		t.Fatalf("anomalies: got %d episodes, want %d (one version each)", len(an.Items), tenants)
	}
	for _, a := range an.Items {
		if a.Ratio == nil || *a.Ratio != 3 {
			t.Errorf("%s: got ratio %v, want the latest version's 3", a.TenantID, a.Ratio)
		}
	}
	r = get(t, f.url+"/api/v1/pg/findings?"+rng+"&limit=1000", bearer("admin"))
	var fs struct {
		Items []pgFinding `json:"items"`
	}
	if err := json.Unmarshal(r.body, &fs); err != nil || r.status != 200 {
		t.Fatalf("findings: %d %s %v", r.status, r.body, err)
	}
	if len(fs.Items) != 8 {
		t.Fatalf("findings: got %d, want 8 (one version each)", len(fs.Items))
	}
	for _, it := range fs.Items {
		if it.Calls != 3 {
			t.Errorf("finding %d: got %d calls, want the latest version's 3", it.QueryID, it.Calls)
		}
	}
}
