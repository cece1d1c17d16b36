package store

import (
	"context"
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

func TestLookupEventsAndCorrections(t *testing.T) {
	st := openTest(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	first := row("a", "dup", now.Add(-2*time.Hour), "1")
	if err := st.InsertEvents(ctx, []Row{first, row("a", "e1", now.Add(-time.Hour), "2"), row("b", "e1", now, "3"),
		row("a", "old", now.Add(-30*24*time.Hour), "4")}, now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	// The same id stored again later (before the dedup horizon existed).
	if err := st.InsertEvents(ctx, []Row{row("a", "dup", now.Add(-time.Hour), "9")}, now); err != nil {
		t.Fatal(err)
	}
	window := func(refs ...EventRef) map[string]StoredEvent {
		t.Helper()
		got, err := st.LookupEvents(ctx, "a", refs, now.Add(-7*24*time.Hour), now.Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	got := window(EventRef{ID: "e1"}, EventRef{ID: "dup"}, EventRef{ID: "old"}, EventRef{ID: "nope"})
	if len(got) != 2 || !got["e1"].Cost.Equal(decimal.RequireFromString("2")) || !got["dup"].Cost.Equal(decimal.RequireFromString("1")) {
		t.Fatalf("window lookup: %+v (want e1 of tenant a, the first copy of dup, not old)", got)
	}
	if got := window(EventRef{ID: "e1", Time: now}); len(got) != 0 {
		t.Fatalf("lookup at the wrong second found %+v", got)
	}
	if got := window(EventRef{ID: "old", Time: now.Add(-30 * 24 * time.Hour)}); len(got) != 1 {
		t.Fatalf("lookup at the event's second, outside the window: %+v", got)
	}
	all, err := st.LookupEvents(ctx, "a", []EventRef{{ID: "old"}}, time.Time{}, time.Time{})
	if err != nil || len(all) != 1 || all["old"].Kind != "api_request" || !all["old"].Time.Equal(now.Add(-30*24*time.Hour)) {
		t.Fatalf("all-time lookup: %+v %v", all, err)
	}

	c := CorrectionRow{TenantID: "a", Kind: "api_request", Time: now.Add(-time.Hour), EventID: "e1", CorrectionID: "c1", Seq: 1,
		Action: "void", DeltaCount: -1, DeltaQty: -1, DeltaCost: decimal.RequireFromString("-2"), Reason: "r", By: "b", CorrectedAt: now}
	b := c
	b.TenantID, b.CorrectionID = "b", "c2"
	if err := st.InsertCorrections(ctx, []CorrectionRow{c, b}); err != nil {
		t.Fatal(err)
	}
	rows, err := st.CorrectionsOf(ctx, "a", nil, []string{"c1", "c2"})
	if err != nil || len(rows) != 1 || rows[0].EventID != "e1" || !rows[0].DeltaCost.Equal(decimal.RequireFromString("-2")) || rows[0].By != "b" {
		t.Fatalf("corrections of a: %+v %v", rows, err)
	}

	// delete-tenant takes the tenant's corrections too; WaitMutations
	// returns once they are gone.
	if err := st.DeleteTenant(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := st.WaitMutations(wctx, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	var ev, corr uint64
	if err := st.Conn().QueryRow(ctx, "SELECT (SELECT count() FROM "+st.Table("events")+" WHERE tenant_id = 'a'), (SELECT count() FROM "+
		st.Table("corrections")+" WHERE tenant_id = 'a')").Scan(&ev, &corr); err != nil {
		t.Fatal(err)
	}
	if ev != 0 || corr != 0 {
		t.Fatalf("after delete-tenant: %d events, %d corrections of a", ev, corr)
	}
}
