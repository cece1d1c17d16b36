package pgstat

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	pg "github.com/pganalyze/pg_query_go/v6"
)

// benchCorpus is the workload plus a spread of shapes from the unit tests.
func benchCorpus() []string {
	var out []string
	for _, w := range workload {
		if len(w.sql) < 4096 {
			out = append(out, w.sql)
		}
	}
	out = append(out,
		"SELECT i.id, (SELECT count(*) FROM items it WHERE it.invoice_id = i.id AND it.tenant_id = i.tenant_id) FROM invoices i WHERE i.tenant_id = $1",
		"WITH x(t, n) AS (SELECT tenant_id, id FROM invoices) SELECT * FROM x WHERE x.t = $1",
		"SELECT * FROM (SELECT tenant_id, id FROM invoices UNION ALL SELECT tenant_id, id FROM items) u WHERE u.tenant_id = $1",
		"SELECT * FROM users u JOIN invoices i ON i.tenant_id = u.tenant_id JOIN items it ON it.tenant_id = i.tenant_id WHERE u.tenant_id = $1",
		"UPDATE items it SET qty = $1 FROM invoices i WHERE it.invoice_id = i.id AND it.tenant_id = i.tenant_id AND i.tenant_id = $2",
	)
	return out
}

// BenchmarkAnalyze measures uncached analysis (parse + walk) against the
// raw pg_query parse of the same statements, in the same run.
func BenchmarkAnalyze(b *testing.B) {
	cat := testCatalog(b)
	an := NewAnalyzer(cat)
	app := cat.Roles[oidApp]
	corpus := benchCorpus()
	b.ReportAllocs()
	var parseDur, totalDur time.Duration
	n := 0
	for i := 0; i < b.N; i++ {
		sql := corpus[i%len(corpus)]
		t0 := time.Now()
		if _, err := pg.Parse(sql); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		an.Analyze(0, sql, app)
		totalDur += time.Since(t1)
		parseDur += t1.Sub(t0)
		n++
	}
	b.ReportMetric(float64(n)/totalDur.Seconds(), "stmts/s")
	b.ReportMetric(float64(n)/parseDur.Seconds(), "raw_parse_stmts/s")
	b.ReportMetric(totalDur.Seconds()/parseDur.Seconds(), "x_raw_parse")
}

// BenchmarkAnalyzeParallel is analysis on all CPUs, as a pull does it.
func BenchmarkAnalyzeParallel(b *testing.B) {
	cat := testCatalog(b)
	an := NewAnalyzer(cat)
	app := cat.Roles[oidApp]
	corpus := benchCorpus()
	b.ReportAllocs()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			an.Analyze(0, corpus[i%len(corpus)], app)
			i++
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "stmts/s")
}

// manyStatements returns n distinct statements (distinct queryids) over
// ten tenant tables, about a fifth of them unscoped.
func manyStatements(n int) (ddl string, stmts []workItem) {
	var d strings.Builder
	for t := 0; t < 10; t++ {
		fmt.Fprintf(&d, "CREATE TABLE t%d (id bigserial PRIMARY KEY, tenant_id bigint, c1 int, c2 int, c3 int, c4 int, c5 int, c6 int);\n", t)
	}
	cols := []string{"c1", "c2", "c3", "c4", "c5", "c6"}
	for t := 0; t < 10 && len(stmts) < n; t++ {
		for mask := 1; mask < 64 && len(stmts) < n; mask++ {
			var sel []string
			for i, c := range cols {
				if mask&(1<<i) != 0 {
					sel = append(sel, c)
				}
			}
			for v := 0; v < 16 && len(stmts) < n; v++ {
				where, args := "tenant_id = $1", []any{1}
				if v&1 != 0 {
					where, args = "c1 = $1", []any{1} // unscoped
				}
				q := fmt.Sprintf("SELECT %s FROM t%d WHERE %s", strings.Join(sel, ", "), t, where)
				if v&8 != 0 {
					q = fmt.Sprintf("SELECT %s FROM t%d WHERE %s AND c3 IS NOT NULL", strings.Join(sel, ", "), t, where)
				}
				if v&2 != 0 {
					q += " ORDER BY c2"
				}
				if v&4 != 0 {
					q += " LIMIT $2"
					args = append(args, 10)
				}
				stmts = append(stmts, workItem{sql: q, args: args})
			}
		}
	}
	return d.String(), stmts
}

// BenchmarkPull5000 pulls a real pg_stat_statements holding 5,000
// workload statements: the first pull parses all of them, the second
// (unchanged workload) parses none.
func BenchmarkPull5000(b *testing.B) {
	e := setupPG(b)
	ctx := context.Background()
	// A few shapes share a queryid; 5,300 give more than 5,000 entries.
	ddl, stmts := manyStatements(5300)
	sup, err := pgx.Connect(ctx, e.super)
	if err != nil {
		b.Fatal(err)
	}
	// The benchmark function runs more than once per binary and
	// pg_stat_statements.max is 10,000: start each run from empty.
	if _, err := sup.Exec(ctx, ddl+"GRANT ALL ON ALL TABLES IN SCHEMA public TO "+e.appRole+"; SELECT pg_stat_statements_reset()"); err != nil {
		b.Fatal(err)
	}
	sup.Close(ctx)
	runWorkload(b, e.app, stmts)
	var firsts, seconds []float64
	var stmtsSeen int
	var secondParses uint64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := newTestStage(b, e.auditor)
		t0 := time.Now()
		rep, err := s.Scan(ctx)
		if err != nil {
			b.Fatal(err)
		}
		firsts = append(firsts, time.Since(t0).Seconds())
		stmtsSeen = rep.Databases[0].Statements
		// Let the auditor's own first-pull queries settle in.
		if _, err := s.Scan(ctx); err != nil {
			b.Fatal(err)
		}
		p := s.Parses()
		t1 := time.Now()
		if _, err := s.Scan(ctx); err != nil {
			b.Fatal(err)
		}
		seconds = append(seconds, time.Since(t1).Seconds())
		secondParses += s.Parses() - p
		s.Close()
	}
	b.StopTimer()
	if stmtsSeen < 5000 {
		b.Fatalf("pg_stat_statements holds %d statements, want >= 5000", stmtsSeen)
	}
	b.ReportMetric(median(firsts), "first_pull_s")
	b.ReportMetric(median(seconds), "unchanged_pull_s")
	b.ReportMetric(float64(secondParses)/float64(b.N), "unchanged_pull_parses")
	b.ReportMetric(float64(stmtsSeen), "statements")
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}
