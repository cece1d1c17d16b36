package correct

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func priced(tenant, id, kind string, at time.Time, qty float64, unit string, isErr bool) store.Row {
	u := decimal.RequireFromString(unit)
	return store.Row{
		Event: &event.Event{ID: id, TenantID: tenant, Kind: kind, Time: at, Quantity: qty, Error: isErr, LatencyMs: 12},
		Plan:  "pro", UnitPrice: u, Cost: u.Mul(decimal.NewFromFloat(qty)), PriceVersion: "v1",
	}
}

func insert(t *testing.T, st *store.Store, rows ...store.Row) {
	t.Helper()
	if err := st.InsertEvents(context.Background(), rows, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// totals is what usage_1m says of a tenant, summed as every reader sums it.
type totals struct {
	Count, Errors uint64
	Quantity      float64
	Cost          string
	Corrections   uint64
}

func usageTotals(t *testing.T, st *store.Store, tenant string) totals {
	t.Helper()
	ctx := context.Background()
	var tt totals
	var cost decimal.Decimal
	if err := st.Conn().QueryRow(ctx, "SELECT sum(count), sum(errors), sum(quantity), sum(cost) FROM "+st.Table("usage_1m")+
		" WHERE tenant_id = ?", tenant).Scan(&tt.Count, &tt.Errors, &tt.Quantity, &cost); err != nil {
		t.Fatal(err)
	}
	tt.Cost = cost.StringFixed(9)
	if err := st.Conn().QueryRow(ctx, "SELECT count() FROM "+st.Table("corrections")).Scan(&tt.Corrections); err != nil {
		t.Fatal(err)
	}
	return tt
}

func qty(f float64) *float64 { return &f }

func TestApplierRules(t *testing.T) {
	st := teststore.New(t)
	now := time.Now().UTC().Truncate(time.Second)
	insert(t, st,
		priced("acme", "e1", event.KindAPIRequest, now.Add(-time.Hour), 1, "0.5", false),
		priced("acme", "e2", event.KindAITokens, now.Add(-2*time.Hour), 1000, "0.001", true),
		priced("acme", "e3", event.KindAPIRequest, now.Add(-3*time.Hour), 1, "0.5", false),
		priced("acme", "old", event.KindAPIRequest, now.Add(-10*24*time.Hour), 1, "0.5", false),
		priced("globex", "g1", event.KindAPIRequest, now.Add(-time.Hour), 1, "0.5", false),
	)
	a, err := NewApplier(DefaultConfig(), st)
	if err != nil {
		t.Fatal(err)
	}
	void := func(id, ev string) event.Correction {
		return event.Correction{ID: id, TenantID: "acme", EventID: ev, Action: event.ActionVoid, Reason: "dispute 42", By: "ops@example.com"}
	}
	amend := func(id, ev string, q float64) event.Correction {
		c := void(id, ev)
		c.Action, c.Quantity = event.ActionAmend, &q
		return c
	}
	forced := void("c-old-forced", "old")
	forced.Force = true
	mismatch := void("c-mismatch", "e3")
	mismatch.TenantID = "globex"
	noReason := void("c-noreason", "e3")
	noReason.Reason = ""
	badAction := void("c-badaction", "e3")
	badAction.Action = "delete"
	negative := amend("c-neg", "e3", -1)
	oldAt := void("c-oldat", "old")
	oldAt.EventTime = now.Add(-10 * 24 * time.Hour)
	atWrongSecond := void("c-wrongsec", "e3")
	atWrongSecond.EventTime = now.Add(-3*time.Hour + time.Second)

	steps := []struct {
		name   string
		c      event.Correction
		status string
		reason event.Reason
		detail string // in the error
	}{
		{"void", void("c1", "e1"), event.CorrectionApplied, "", ""},
		{"void again", void("c2", "e1"), event.CorrectionRefused, event.ReasonAlreadyVoided, "cannot be voided twice"},
		{"amend a voided event", amend("c3", "e1", 5), event.CorrectionRefused, event.ReasonAlreadyVoided, "cannot be amended"},
		{"another tenant's id", void("c4", "g1"), event.CorrectionRefused, event.ReasonUnknownEvent, `no event "g1" of tenant acme`},
		{"unknown id", void("c5", "nope"), event.CorrectionRefused, event.ReasonUnknownEvent, "within collector.lateness"},
		{"older than lateness", void("c6", "old"), event.CorrectionRefused, event.ReasonUnknownEvent, "set force"},
		{"older than lateness, time given", oldAt, event.CorrectionRefused, event.ReasonTooLate, "older than collector.lateness"},
		{"amend to the same quantity", amend("c7", "e2", 1000), event.CorrectionRefused, event.ReasonNoChange, "already has quantity 1000"},
		{"tenant differs from the request", mismatch, event.CorrectionRefused, event.ReasonSubjectMismatch, "differs from the request's tenant"},
		{"no reason", noReason, event.CorrectionRefused, event.ReasonMissingField, "reason"},
		{"unknown action", badAction, event.CorrectionRefused, event.ReasonBadField, `"delete"`},
		{"negative quantity", negative, event.CorrectionRefused, event.ReasonBadQuantity, "quantity"},
		{"wrong event second", atWrongSecond, event.CorrectionRefused, event.ReasonUnknownEvent, "at "},
		{"amend", amend("c8", "e2", 250), event.CorrectionApplied, "", ""},
		{"same correction id again", void("c1", "e1"), event.CorrectionDuplicate, "", ""},
		{"forced correction of an old event", forced, event.CorrectionApplied, "", ""},
	}
	ctx := context.Background()
	for _, s := range steps {
		before := usageTotals(t, st, "acme")
		out, err := a.Apply(ctx, "acme", []event.Correction{s.c})
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		r := out.Results[0]
		if r.Status != s.status || r.Reason != s.reason || !strings.Contains(r.Error, s.detail) {
			t.Errorf("%s: got %s %s %q, want %s %s containing %q", s.name, r.Status, r.Reason, r.Error, s.status, s.reason, s.detail)
		}
		if after := usageTotals(t, st, "acme"); s.status != event.CorrectionApplied && after != before {
			t.Errorf("%s: a %s correction changed usage_1m or corrections: got %+v, want %+v", s.name, s.status, after, before)
		}
	}
	// e1 and old voided, e2 amended from 1000 to 250 tokens; e3 untouched.
	got := usageTotals(t, st, "acme")
	want := totals{Count: 2, Errors: 1, Quantity: 251, Cost: "0.750000000", Corrections: 3}
	if got != want {
		t.Fatalf("usage_1m of acme: got %+v, want %+v", got, want)
	}
	if g := usageTotals(t, st, "globex"); g.Count != 1 || g.Cost != "0.500000000" {
		t.Fatalf("globex changed: %+v", g)
	}
	var action, by, reason string
	var dc int64
	if err := st.Conn().QueryRow(ctx, "SELECT action, corrected_by, reason, delta_count FROM "+st.Table("corrections")+
		" WHERE correction_id = 'c1'").Scan(&action, &by, &reason, &dc); err != nil {
		t.Fatal(err)
	}
	if action != "void" || by != "ops@example.com" || reason != "dispute 42" || dc != -1 {
		t.Fatalf("audit row: got %s %s %q %d", action, by, reason, dc)
	}
	var originals uint64
	if err := st.Conn().QueryRow(ctx, "SELECT count() FROM "+st.Table("events")+" WHERE tenant_id = 'acme'").Scan(&originals); err != nil {
		t.Fatal(err)
	}
	if originals != 4 {
		t.Fatalf("events rows of acme: got %d, want 4 (originals stay for audit)", originals)
	}
}

func TestApplierOrderWithinOneRequest(t *testing.T) {
	st := teststore.New(t)
	now := time.Now().UTC()
	insert(t, st, priced("acme", "e1", event.KindAITokens, now.Add(-time.Minute), 100, "0.01", false))
	a, err := NewApplier(DefaultConfig(), st)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(id, action string, q *float64) event.Correction {
		return event.Correction{ID: id, TenantID: "acme", EventID: "e1", EventTime: now.Add(-time.Minute),
			Action: action, Quantity: q, Reason: "r", By: "b"}
	}
	out, err := a.Apply(context.Background(), "acme", []event.Correction{
		mk("a1", event.ActionAmend, qty(40)),
		mk("a2", event.ActionAmend, qty(70)),
		mk("v1", event.ActionVoid, nil),
		mk("v2", event.ActionVoid, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range out.Results {
		got = append(got, r.ID+":"+r.Status)
	}
	if want := "a1:applied a2:applied v1:applied v2:refused"; strings.Join(got, " ") != want {
		t.Fatalf("got %s, want %s", strings.Join(got, " "), want)
	}
	if len(out.Effects) != 3 || out.Effects[0].Cost != -0.6 || out.Effects[1].Cost != 0.3 || out.Effects[2].Cost != -0.7 || out.Effects[2].Count != -1 {
		t.Fatalf("effects: %+v", out.Effects)
	}
	if g := usageTotals(t, st, "acme"); g.Count != 0 || g.Quantity != 0 || g.Cost != "0.000000000" {
		t.Fatalf("usage_1m after amend, amend, void: %+v", g)
	}
	// The stored chain reads back the same: a new Applier sees e1 voided.
	b, _ := NewApplier(DefaultConfig(), st)
	out, err = b.Apply(context.Background(), "acme", []event.Correction{mk("a3", event.ActionAmend, qty(1))})
	if err != nil || out.Results[0].Reason != event.ReasonAlreadyVoided {
		t.Fatalf("amend after a stored void: got %+v %v", out.Results, err)
	}
}

func TestApplierAmendOverflowRefused(t *testing.T) {
	st := teststore.New(t)
	now := time.Now().UTC()
	insert(t, st, priced("acme", "e1", event.KindAITokens, now, 1, "900", false))
	a, _ := NewApplier(DefaultConfig(), st)
	out, err := a.Apply(context.Background(), "acme", []event.Correction{{ID: "x", TenantID: "acme", EventID: "e1",
		Action: event.ActionAmend, Quantity: qty(2e6), Reason: "r", By: "b"}})
	if err != nil {
		t.Fatal(err)
	}
	if r := out.Results[0]; r.Reason != event.ReasonBadQuantity || !strings.Contains(r.Error, "overflows") {
		t.Fatalf("got %+v, want bad_quantity", r)
	}
}

func BenchmarkApply(b *testing.B) {
	srv, db := testenv.ClickHouse(b)
	st := teststore.On(b, srv, db)
	now := time.Now().UTC()
	var rows []store.Row
	for i := range 100000 {
		rows = append(rows, priced("acme", fmt.Sprintf("e%d", i), event.KindAPIRequest, now.Add(-time.Duration(i)*time.Second), 1, "0.5", false))
	}
	if err := st.InsertEvents(context.Background(), rows, now); err != nil {
		b.Fatal(err)
	}
	a, _ := NewApplier(DefaultConfig(), st)
	b.ResetTimer()
	n := 0
	for i := 0; i < b.N; i++ {
		cs := make([]event.Correction, event.MaxCorrectionsPerRequest)
		for j := range cs {
			cs[j] = event.Correction{ID: fmt.Sprintf("c%d", n), TenantID: "acme", EventID: fmt.Sprintf("e%d", n%100000),
				Action: event.ActionVoid, Reason: "r", By: "b"}
			n++
		}
		if _, err := a.Apply(context.Background(), "acme", cs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "corrections/s")
}
