package store

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

func TestUsageReads(t *testing.T) {
	st := openTest(t)
	ctx := context.Background()
	h := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	var rows []Row
	add := func(tenant, id string, at time.Time, cost string, latency float64) {
		r := row(tenant, id, at, cost)
		r.Event.LatencyMs = latency
		rows = append(rows, r)
	}
	add("acme", "a1", h.Add(5*time.Second), "1", 10)
	add("acme", "a2", h.Add(30*time.Second), "2", 30)
	add("acme", "a3", h.Add(time.Minute), "4", 0) // no latency reported
	add("beta", "b1", h.Add(10*time.Second), "8", 20)
	add("acme", "a4", h.Add(time.Hour+time.Minute), "16", 5)
	add("acme", "a5", h.Add(-24*time.Hour), "32", 5) // before the reads below
	// Two inserts leave two partial rows per minute until merges sum them.
	if err := st.InsertEvents(ctx, rows[:2], h); err != nil {
		t.Fatal(err)
	}
	if err := st.InsertEvents(ctx, rows[2:], h); err != nil {
		t.Fatal(err)
	}

	var got []UsageRow
	err := st.Rollups(ctx, h, h.Add(2*time.Hour), func(r UsageRow) error { got = append(got, r); return nil })
	if err != nil {
		t.Fatal(err)
	}
	want := []UsageRow{
		{TenantID: "acme", Kind: "api_request", Minute: h, Count: 2, Quantity: 2, Cost: 3, LatencyCount: 2},
		{TenantID: "beta", Kind: "api_request", Minute: h, Count: 1, Quantity: 1, Cost: 8, LatencyCount: 1, LatencyP95: 20},
		{TenantID: "acme", Kind: "api_request", Minute: h.Add(time.Minute), Count: 1, Quantity: 1, Cost: 4},
		{TenantID: "acme", Kind: "api_request", Minute: h.Add(61 * time.Minute), Count: 1, Quantity: 1, Cost: 16, LatencyCount: 1, LatencyP95: 5},
	}
	if len(got) != len(want) {
		t.Fatalf("Rollups: got %d rows %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		g := got[i]
		if p := g.LatencyP95; i == 0 && (p < 10 || p > 30) {
			t.Errorf("row 0: p95 %v, want within the samples 10..30", p)
		}
		if i == 0 {
			g.LatencyP95 = 0
		}
		g.Minute = g.Minute.UTC()
		if g != want[i] {
			t.Errorf("Rollups row %d: got %+v, want %+v", i, g, want[i])
		}
	}
	stop := errors.New("stop")
	n := 0
	if err := st.Rollups(ctx, h, h.Add(2*time.Hour), func(UsageRow) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("Rollups with a failing fn: got %v after %d rows, want stop after 1", err, n)
	}

	var hours []HourlyCount
	if err := st.HourlyCounts(ctx, h.Add(-48*time.Hour), h.Add(2*time.Hour), func(c HourlyCount) error {
		c.Hour = c.Hour.UTC()
		hours = append(hours, c)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wantHours := []HourlyCount{{"acme", h.Add(-24 * time.Hour), 1}, {"acme", h, 3}, {"acme", h.Add(time.Hour), 1}, {"beta", h, 1}}
	if !reflect.DeepEqual(hours, wantHours) {
		t.Errorf("HourlyCounts: got %+v, want %+v", hours, wantHours)
	}

	spend, err := st.SpendSince(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]float64{"acme": 23, "beta": 8}; !maps.Equal(spend, want) {
		t.Errorf("SpendSince: got %v, want %v", spend, want)
	}
}

func TestAnomaliesRoundTrip(t *testing.T) {
	st := openTest(t)
	ctx := context.Background()
	at := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	a := AnomalyRow{Fingerprint: "f1", TenantID: "acme", Metric: "spend_cap", Kind: "k", Integration: "i", Status: "firing",
		Severity: "warning", Observed: 91, Baseline: 100, Ratio: 0.91, StartsAt: at, EndsAt: time.Unix(0, 0).UTC(),
		Summary: "90%", UpdatedAt: at.Add(time.Second)}
	b := a
	b.Fingerprint, b.Ratio = "f2", 0.7
	old := a
	old.Fingerprint, old.Ratio, old.StartsAt = "f0", 1, at.Add(-31*24*time.Hour)
	other := a
	other.Fingerprint, other.TenantID, other.Metric, other.Ratio = "f3", "beta", "usage", 5
	if err := st.InsertAnomalies(ctx, []AnomalyRow{a, b, old, other}); err != nil {
		t.Fatal(err)
	}
	ratios, err := st.MaxAnomalyRatios(ctx, "spend_cap", at.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]float64{"acme": 0.91}; !maps.Equal(ratios, want) {
		t.Errorf("MaxAnomalyRatios: got %v, want %v", ratios, want)
	}
	var g AnomalyRow
	if err := st.Conn().QueryRow(ctx, "SELECT "+AnomalyColumns+" FROM "+st.Table("anomalies")+" WHERE fingerprint = 'f1'").Scan(
		&g.Fingerprint, &g.TenantID, &g.Metric, &g.Kind, &g.Integration, &g.Status, &g.Severity, &g.Observed, &g.Baseline,
		&g.Ratio, &g.StartsAt, &g.EndsAt, &g.Summary, &g.UpdatedAt); err != nil {
		t.Fatal(err)
	}
	g.StartsAt, g.EndsAt, g.UpdatedAt = g.StartsAt.UTC(), g.EndsAt.UTC(), g.UpdatedAt.UTC()
	if g != a {
		t.Errorf("stored anomaly: got %+v, want %+v", g, a)
	}
}

func TestDecisionsRoundTrip(t *testing.T) {
	st := openTest(t)
	ctx := context.Background()
	if rev, err := st.LastDecisionRevision(ctx); err != nil || rev != 0 {
		t.Fatalf("LastDecisionRevision of an empty table: got %d, %v; want 0", rev, err)
	}
	at := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	var rows []DecisionRow
	for _, rev := range []uint64{3, 9, 5} {
		rows = append(rows, DecisionRow{TenantID: "acme", Scope: "all", Action: "throttle", RatePerSec: 2.5, Burst: 10,
			IssuedAt: at, ExpiresAt: at.Add(time.Hour), Reason: "r", Source: "manual", AnomalyID: "f", RecordedAt: at,
			KVKey: "acme", KVRevision: rev, KVOp: "put", Verified: rev != 5, KeyID: "k1", RejectReason: "", Raw: ""})
	}
	rows[2].RejectReason, rows[2].Raw = "signature", `{"x":1}`
	rows[2].Mode = "shadow"
	if err := st.InsertDecisions(ctx, rows); err != nil {
		t.Fatal(err)
	}
	if rev, err := st.LastDecisionRevision(ctx); err != nil || rev != 9 {
		t.Errorf("LastDecisionRevision: got %d, %v; want 9", rev, err)
	}
	got, err := st.DecisionRevisions(ctx, []uint64{1, 3, 5, 7})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[uint64]bool{3: true, 5: true}; !maps.Equal(got, want) {
		t.Errorf("DecisionRevisions: got %v, want %v", got, want)
	}
	var g DecisionRow
	var verified uint8
	if err := st.Conn().QueryRow(ctx, "SELECT "+DecisionColumns+" FROM "+st.Table("decisions")+" WHERE kv_revision = 5").Scan(
		&g.TenantID, &g.Scope, &g.Action, &g.RatePerSec, &g.Burst, &g.IssuedAt, &g.ExpiresAt, &g.Reason, &g.Source,
		&g.AnomalyID, &g.RecordedAt, &g.KVKey, &g.KVRevision, &g.KVOp, &verified, &g.KeyID, &g.RejectReason, &g.Raw, &g.Mode); err != nil {
		t.Fatal(err)
	}
	g.Verified = verified != 0
	g.IssuedAt, g.ExpiresAt, g.RecordedAt = g.IssuedAt.UTC(), g.ExpiresAt.UTC(), g.RecordedAt.UTC()
	if g != rows[2] {
		t.Errorf("stored decision: got %+v, want %+v", g, rows[2])
	}
}

func TestFindingsAndBillingExportsRoundTrip(t *testing.T) {
	st := openTest(t)
	ctx := context.Background()
	at := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	f := FindingRow{Database: "app", QueryID: -42, UserID: 10, Role: "app", Query: "SELECT 1", Class: "unscoped",
		Calls: 3, TotalExecTimeMs: 1.5, FirstSeen: at, LastSeen: at.Add(time.Minute), ObservedAt: at.Add(2 * time.Minute)}
	g := f
	g.QueryID, g.Tables = 7, []string{"public.items"}
	if err := st.InsertFindings(ctx, []FindingRow{f, g}); err != nil {
		t.Fatal(err)
	}
	var tables []string
	var calls uint64
	if err := st.Conn().QueryRow(ctx, "SELECT tables, calls FROM "+st.Table("pg_findings")+" WHERE queryid = -42").Scan(&tables, &calls); err != nil {
		t.Fatal(err)
	}
	if len(tables) != 0 || calls != 3 {
		t.Errorf("finding without tables: got tables %v, calls %d; want none, 3", tables, calls)
	}

	amount := decimal.RequireFromString("12.345678901")
	rows := []BillingExportRow{
		{ExportID: "bx-1", PeriodFrom: "2026-02-01", PeriodTo: "2026-03-01", GeneratedAt: at, LineType: "export", Currency: "EUR"},
		{ExportID: "bx-1", PeriodFrom: "2026-02-01", PeriodTo: "2026-03-01", GeneratedAt: at, LineType: "usage", TenantID: "acme",
			Kind: "api_request", UnitPrice: decimal.RequireFromString("0.000000001"), PriceVersion: "v1", Events: 5, Quantity: 5.5,
			Amount: amount, AmountRounded: amount.Round(2), Currency: "EUR"},
	}
	if err := st.InsertBillingExport(ctx, rows); err != nil {
		t.Fatal(err)
	}
	var got, rounded, unit decimal.Decimal
	var events int64
	if err := st.Conn().QueryRow(ctx, "SELECT amount, amount_rounded, unit_price, events FROM "+st.Table("billing_exports")+
		" WHERE line_type = 'usage'").Scan(&got, &rounded, &unit, &events); err != nil {
		t.Fatal(err)
	}
	if !got.Equal(amount) || !rounded.Equal(decimal.RequireFromString("12.35")) || !unit.Equal(rows[1].UnitPrice) || events != 5 {
		t.Errorf("stored usage line: got amount %s, rounded %s, unit %s, events %d; want %s, 12.35, %s, 5",
			got, rounded, unit, events, amount, rows[1].UnitPrice)
	}
	var n uint64
	if err := st.Conn().QueryRow(ctx, "SELECT count() FROM "+st.Table("billing_exports")+" WHERE export_id = 'bx-1'").Scan(&n); err != nil || n != 2 {
		t.Errorf("billing_exports rows: got %d, %v; want 2", n, err)
	}
}

func TestInsertNothingIsANoOp(t *testing.T) {
	// No server: an empty insert must not touch the connection.
	cfg := DefaultConfig()
	cfg.Addr, cfg.DialTimeout = []string{"127.0.0.1:1"}, 100*time.Millisecond
	st, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	for name, err := range map[string]error{
		"anomalies":       st.InsertAnomalies(ctx, nil),
		"decisions":       st.InsertDecisions(ctx, nil),
		"pg_findings":     st.InsertFindings(ctx, nil),
		"billing_exports": st.InsertBillingExport(ctx, nil),
		"corrections":     st.InsertCorrections(ctx, nil),
	} {
		if err != nil {
			t.Errorf("%s: got %v, want nil for no rows", name, err)
		}
	}
	if got, err := st.DecisionRevisions(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("DecisionRevisions(nil): got %v, %v; want empty", got, err)
	}
}

// TestOpenRefusesABadDatabase: the database name is spliced into every
// handle's SQL, so Open refuses one that is not a plain identifier.
func TestOpenRefusesABadDatabase(t *testing.T) {
	for _, db := range []string{"x; DROP TABLE y", "a.b", "", "1abc", "tenantguard`"} {
		cfg := DefaultConfig()
		cfg.Database = db
		if st, err := Open(context.Background(), cfg); err == nil {
			st.Close()
			t.Errorf("Open with database %q: got nil error, want one", db)
		}
	}
}
