package pgstat

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// TestRunKeepsFindingsInClickHouse runs the daemon loop against a real
// Postgres and a real ClickHouse, and checks pg_findings and the gauge.
func TestRunKeepsFindingsInClickHouse(t *testing.T) {
	e := setupPG(t)
	srv, chdb := testenv.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st := teststore.On(t, srv, chdb)
	runWorkload(t, e.app, workload)
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.DSNs = []string{e.auditor}
	cfg.Interval = 200 * time.Millisecond
	s, err := New(cfg, WithWriter(st), WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()

	var want int
	for _, it := range workload {
		if it.class != "" {
			want++
		}
	}
	type row struct {
		class  string
		tables []string
		calls  uint64
		query  string
	}
	deadline := time.Now().Add(30 * time.Second)
	var rows []row
	for time.Now().Before(deadline) {
		rows = rows[:0]
		rs, err := st.Conn().Query(ctx, "SELECT class, tables, calls, query FROM "+chdb+".pg_findings FINAL WHERE database = ?", e.db)
		if err != nil {
			t.Fatal(err)
		}
		for rs.Next() {
			var r row
			if err := rs.Scan(&r.class, &r.tables, &r.calls, &r.query); err != nil {
				t.Fatal(err)
			}
			rows = append(rows, r)
		}
		rs.Close()
		if len(rows) >= want {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(rows) != want {
		t.Fatalf("pg_findings rows: got %d, want %d", len(rows), want)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].query < rows[j].query })
	for _, r := range rows {
		if r.class == string(ClassUnscoped) && len(r.tables) == 0 {
			t.Errorf("unscoped row without tables: %.80s", r.query)
		}
	}

	// A new unscoped statement reaches ClickHouse on a later pull.
	fresh := workItem{sql: "SELECT id, email FROM users WHERE email = $1", args: []any{"a@acme"}}
	runWorkload(t, e.app, []workItem{fresh})
	found := false
	for time.Now().Before(deadline) && !found {
		var n uint64
		if err := st.Conn().QueryRow(ctx, "SELECT count() FROM "+chdb+".pg_findings WHERE query = ? AND class = 'unscoped'", fresh.sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		found = n > 0
		time.Sleep(100 * time.Millisecond)
	}
	if !found {
		t.Fatal("new unscoped statement never reached pg_findings")
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v, want nil on cancel", err)
	}

	expo := `
# HELP tenantguard_pg_findings Statements in pg_stat_statements not restricted to one tenant, by class and database.
# TYPE tenantguard_pg_findings gauge
tenantguard_pg_findings{class="multi_tenant",database="DB"} 2
tenantguard_pg_findings{class="unknown",database="DB"} 1
tenantguard_pg_findings{class="unscoped",database="DB"} UNSCOPED
`
	unscoped := want - 3 + 1
	expo = strings.ReplaceAll(strings.ReplaceAll(expo, "DB", e.db), "UNSCOPED", itoa(unscoped))
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expo), "tenantguard_pg_findings"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
