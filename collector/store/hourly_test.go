package store

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/shopspring/decimal"
)

// TestHourlyCountsMatchMinuteRollups: HourlyCounts, read from usage_1h,
// gives what grouping usage_1m into hours gives, on one node and through
// two shards: for hours the migration backfilled from usage_1m, for hours
// its views filled from events and corrections, for hours of both, and
// after the migration ran again from an empty ledger.
func TestHourlyCountsMatchMinuteRollups(t *testing.T) {
	for _, l := range []struct {
		name string
		open func(*testing.T) *Store
	}{
		{"one_node", openTest},
		{"two_shards", func(t *testing.T) *Store { st, _ := openCluster(t); return st }},
	} {
		t.Run(l.name, func(t *testing.T) { testHourlyCountsMatch(t, l.open(t)) })
	}
}

func testHourlyCountsMatch(t *testing.T, st *Store) {
	ctx := context.Background()
	h := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	kinds := []string{"api_request", "compute_seconds", "db_query"}
	tenants := []string{"acme", "beta", "gamma", "delta", "eps", "zeta"}
	events := func(prefix string, hours []int) []Row {
		var rows []Row
		for ti, tenant := range tenants {
			for _, hr := range hours {
				for m := range 3 + ti {
					r := row(tenant, fmt.Sprintf("%s-%d-%d", prefix, hr, m), h.Add(time.Duration(hr)*time.Hour+time.Duration(m*7+ti)*time.Minute), "1")
					r.Event.Kind = kinds[(m+ti)%len(kinds)]
					rows = append(rows, r)
				}
			}
		}
		return rows
	}
	void := func(tenant, id string, at time.Time) CorrectionRow {
		return CorrectionRow{TenantID: tenant, Kind: "api_request", Time: at, EventID: id, CorrectionID: "c-" + id, Seq: 1,
			Action: "void", DeltaCount: -1, DeltaQty: -1, DeltaCost: decimal.RequireFromString("-1"), Reason: "r", By: "b", CorrectedAt: h}
	}

	// Before usage_1h: history of a day ago and of hours 0 and 1, a void,
	// and an hour of one event that is voided whole.
	before := append(events("a", []int{-24, -23, 0, 1}), row("eps", "lone", h.Add(-5*time.Hour), "1"))
	if err := st.InsertEvents(ctx, before, h); err != nil {
		t.Fatal(err)
	}
	if err := st.InsertCorrections(ctx, []CorrectionRow{
		void("acme", "a-0-0", h), void("eps", "lone", h.Add(-5*time.Hour)),
	}); err != nil {
		t.Fatal(err)
	}
	unmigrateHourly(t, st)
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatalf("migrate with usage_1h pending: %v", err)
	}

	// After it: more in hour 1, new hours 2 and 3, and a void through the view.
	if err := st.InsertEvents(ctx, events("b", []int{1, 2, 3}), h); err != nil {
		t.Fatal(err)
	}
	if err := st.InsertCorrections(ctx, []CorrectionRow{void("beta", "b-2-1", h.Add(2*time.Hour+8*time.Minute))}); err != nil {
		t.Fatal(err)
	}

	from, to := h.Add(-48*time.Hour), h.Add(4*time.Hour)
	want := minuteHours(t, st, from, to)
	if len(want) != len(tenants)*6 {
		t.Fatalf("usage_1m has %d tenant hours, want %d", len(want), len(tenants)*6)
	}
	check := func(when string) {
		t.Helper()
		var got []HourlyCount
		if err := st.HourlyCounts(ctx, from, to, func(c HourlyCount) error {
			c.Hour = c.Hour.UTC()
			got = append(got, c)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: HourlyCounts got %+v, want usage_1m's %+v", when, got, want)
		}
		var some []HourlyCount
		if err := st.HourlyCountsOf(ctx, []string{"beta", "zeta"}, from, to, func(c HourlyCount) error {
			c.Hour = c.Hour.UTC()
			some = append(some, c)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		var wantSome []HourlyCount
		for _, c := range want {
			if c.TenantID == "beta" || c.TenantID == "zeta" {
				wantSome = append(wantSome, c)
			}
		}
		if !reflect.DeepEqual(some, wantSome) {
			t.Errorf("%s: HourlyCountsOf got %+v, want %+v", when, some, wantSome)
		}
	}
	check("after the backfill")

	// A migration that runs again (its ledger row lost) backfills nothing twice.
	dropLedger(t, st)
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatalf("migrate again: %v", err)
	}
	check("after a second run")
}

// minuteHours is the hourly read as it was before usage_1h: usage_1m's
// minutes grouped into hours, hours that net to nothing left out.
func minuteHours(t *testing.T, st *Store, from, to time.Time) []HourlyCount {
	t.Helper()
	rows, err := st.Conn().Query(context.Background(), `SELECT tenant_id, toStartOfHour(minute) AS h, sum(count) AS n
FROM `+st.Table("usage_1m")+` WHERE minute >= ? AND minute < ?
GROUP BY tenant_id, h HAVING n != 0 ORDER BY tenant_id, h`, from, to)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []HourlyCount
	for rows.Next() {
		var c HourlyCount
		if err := rows.Scan(&c.TenantID, &c.Hour, &c.Count); err != nil {
			t.Fatal(err)
		}
		c.Hour = c.Hour.UTC()
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// unmigrateHourly takes a migrated database back to before usage_1h on
// every node: its views and tables are dropped, and so is the ledger
// (every other step is idempotent, so the next Migrate re-records them
// and applies only usage_1h).
func unmigrateHourly(t *testing.T, st *Store) {
	t.Helper()
	for _, node := range st.nodes() {
		for _, name := range []string{"usage_1h_mv", "usage_1h_corrections_mv", "usage_1h", "usage_1h" + LocalSuffix} {
			if err := node.conn.Exec(context.Background(), "DROP TABLE IF EXISTS "+st.Table(name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	dropLedger(t, st)
}

func dropLedger(t *testing.T, st *Store) {
	t.Helper()
	for _, node := range st.nodes() {
		if err := node.conn.Exec(context.Background(), "DROP TABLE IF EXISTS "+st.Table("schema_migrations")); err != nil {
			t.Fatal(err)
		}
	}
}
