package billing

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// adjustments returns the adjustment lines of an export by tenant, in order.
func adjustments(lines []map[string]string) map[string][]map[string]string {
	out := map[string][]map[string]string{}
	for _, l := range lines {
		if l["line_type"] == LineAdjustment || l["line_type"] == LineAdjustmentTotal {
			out[l["tenant_id"]] = append(out[l["tenant_id"]], l)
		}
	}
	return out
}

func TestReissuedPeriodShowsAdjustments(t *testing.T) {
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) { testReissuedPeriod(t, l.open(t)) })
	}
}

func testReissuedPeriod(t *testing.T, st *store.Store) {
	x := newExporter(t, st)
	from, to := recent()
	at := from.Add(2 * time.Hour)
	insert(t, st, []store.Row{
		pricedRow("a", "a1", event.KindAPIRequest, at, 1, "0.333333333"),
		pricedRow("a", "a2", event.KindAPIRequest, at, 1, "0.333333333"),
		pricedRow("a", "a3", event.KindAITokens, at, 100, "0.001"),
		pricedRow("b", "b1", event.KindAPIRequest, at, 1, "0.25"),
		pricedRow("d", "d1", event.KindJobRun, at, 1, "2"),
		pricedRow("e", "e1", event.KindJobRun, at, 1, "2"),
	})
	req := Request{From: from, To: to}

	// The first export of the closed period is recorded, with nothing to
	// adjust against; a second one, with nothing changed, adjusts nothing.
	first, lines := billingLines(t, x, req)
	if first.ExportID == "" || len(adjustments(lines)) != 0 {
		t.Fatalf("first export: id %q, adjustments %v", first.ExportID, adjustments(lines))
	}
	second, lines := billingLines(t, x, req)
	if second.ExportID == "" || second.ExportID == first.ExportID || len(adjustments(lines)) != 0 || second.Adjusted != 0 {
		t.Fatalf("unchanged re-export: id %q, adjustments %v", second.ExportID, adjustments(lines))
	}

	// Then: a correction (a), a late event (b), a backfilled tenant (c),
	// a tenant whose only event is voided (d); e is untouched.
	applyCorrections(t, st, "a", voidOf("a", "a2"), amendOf("a", "a3", 40))
	applyCorrections(t, st, "d", voidOf("d", "d1"))
	insert(t, st, []store.Row{
		pricedRow("b", "b2", event.KindAPIRequest, at.Add(time.Hour), 1, "0.25"),
		pricedRow("c", "c1", event.KindAITokens, at, 1000, "0.001"),
	})
	third, lines := billingLines(t, x, req)
	adj := adjustments(lines)
	type want struct{ lineType, kind, events, quantity, amount, rounded string }
	cases := map[string][]want{
		"a": {
			{LineAdjustment, event.KindAITokens, "0", "-60", "-0.060000000", "-0.06"},
			// 0.67 was invoiced (it took the total's leftover cent), 0.33 now.
			{LineAdjustment, event.KindAPIRequest, "-1", "-1", "-0.333333333", "-0.34"},
			{LineAdjustmentTotal, "", "-1", "", "-0.393333333", "-0.40"},
		},
		"b": {
			{LineAdjustment, event.KindAPIRequest, "1", "1", "0.250000000", "0.25"},
			{LineAdjustmentTotal, "", "1", "", "0.250000000", "0.25"},
		},
		"c": {
			{LineAdjustment, event.KindAITokens, "1", "1000", "1.000000000", "1.00"},
			{LineAdjustmentTotal, "", "1", "", "1.000000000", "1.00"},
		},
		"d": {
			{LineAdjustment, event.KindJobRun, "-1", "-1", "-2.000000000", "-2.00"},
			{LineAdjustmentTotal, "", "-1", "", "-2.000000000", "-2.00"},
		},
	}
	if len(adj) != len(cases) {
		t.Fatalf("tenants with adjustments: got %v, want a b c d", adj)
	}
	for tenant, ws := range cases {
		got := adj[tenant]
		if len(got) != len(ws) {
			t.Fatalf("%s: got %d adjustment lines %v, want %d", tenant, len(got), got, len(ws))
		}
		for i, w := range ws {
			g := got[i]
			if g["line_type"] != w.lineType || g["kind"] != w.kind || g["events"] != w.events || g["quantity"] != w.quantity ||
				g["amount"] != w.amount || g["amount_rounded"] != w.rounded || g["adjusts_export_id"] != second.ExportID {
				t.Errorf("%s line %d: got %v, want %+v against %s", tenant, i, g, w, second.ExportID)
			}
		}
	}
	// d has no usage lines any more: its credit sits between c and e.
	var order []string
	for _, l := range lines {
		order = append(order, l["tenant_id"]+":"+l["line_type"])
	}
	if got := order[len(order)-4:]; got[0] != "d:adjustment" || got[1] != "d:adjustment_total" || got[2] != "e:usage" {
		t.Fatalf("line order: %v", order)
	}
	// The adjustments reconcile to the cent: new rounded total minus the
	// invoiced one.
	if !third.Adjustment.Equal(decimal.RequireFromString("-1.143333333")) || third.Adjusted != 4 {
		t.Fatalf("summary: %d tenants adjusted by %s", third.Adjusted, third.Adjustment)
	}

	// Adjustments are relative to the latest export: re-exporting now
	// shows none. A preview is not recorded.
	applyCorrections(t, st, "e", voidOf("e", "e1"))
	preview, lines := billingLines(t, x, Request{From: from, To: to, NoRecord: true})
	if preview.ExportID != "" || len(adjustments(lines)["e"]) != 2 {
		t.Fatalf("preview: id %q, adjustments %v", preview.ExportID, adjustments(lines))
	}
	fourth, lines := billingLines(t, x, req)
	if adj := adjustments(lines); len(adj) != 1 || adj["e"][1]["amount"] != "-2.000000000" || adj["e"][1]["adjusts_export_id"] != third.ExportID {
		t.Fatalf("after the preview: %v, want e's credit against %s", adj, third.ExportID)
	}

	// Against a named export: everything since the first invoice.
	_, lines = billingLines(t, x, Request{From: from, To: to, AdjustFrom: first.ExportID, NoRecord: true})
	if adj := adjustments(lines); len(adj) != 5 || adj["a"][2]["amount"] != "-0.393333333" || adj["a"][2]["adjusts_export_id"] != first.ExportID {
		t.Fatalf("against the first export: %v", adj)
	}
	// One tenant's export adjusts against the latest export that billed it.
	applyCorrections(t, st, "b", voidOf("b", "b1"))
	one, lines := billingLines(t, x, Request{From: from, To: to, Tenant: "b"})
	if adj := adjustments(lines); len(adj) != 1 || adj["b"][1]["amount"] != "-0.250000000" || adj["b"][1]["adjusts_export_id"] != fourth.ExportID {
		t.Fatalf("tenant b alone: %v", adj)
	}
	// ... and the next all-tenants export takes b's own export into account.
	_, lines = billingLines(t, x, req)
	if adj := adjustments(lines); len(adj) != 0 {
		t.Fatalf("after b's own export: %v, want none (b's own export %s is newer)", adj, one.ExportID)
	}

	// Bad or foreign adjust_from ids are refused before anything is written.
	for _, id := range []string{"bx-nope", "bx-20260101T000000.000000Z-00000000", one.ExportID} {
		var buf bytes.Buffer
		_, err := x.Billing(context.Background(), &buf, Request{From: from, To: to, Format: FormatCSV, AdjustFrom: id})
		if !errors.Is(err, ErrInvalid) || buf.Len() != 0 {
			t.Errorf("adjust_from %s: got %v (%d bytes), want ErrInvalid and nothing written", id, err, buf.Len())
		}
	}
}

func TestOpenPeriodIsNotRecorded(t *testing.T) {
	st := teststore.New(t)
	x := newExporter(t, st)
	now := time.Now().UTC()
	insert(t, st, []store.Row{pricedRow("a", "a1", event.KindAPIRequest, now.Add(-time.Minute), 1, "1")})
	sum, err := x.Billing(context.Background(), &bytes.Buffer{}, Request{From: now.Add(-time.Hour), To: now.Add(time.Hour), Format: FormatCSV})
	if err != nil || sum.ExportID != "" {
		t.Fatalf("open period: id %q, %v", sum.ExportID, err)
	}
	var n uint64
	if err := st.Conn().QueryRow(context.Background(), "SELECT count() FROM "+st.Table("billing_exports")).Scan(&n); err != nil || n != 0 {
		t.Fatalf("billing_exports rows: %d, %v", n, err)
	}
}
