package pgstat

import (
	"strings"
	"testing"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// FuzzAnalyze feeds random SQL to the analyzer: it must never panic (a
// recovered panic shows as an "internal error" reason), text that does not
// parse must be unknown, and the verdict must be deterministic.
func FuzzAnalyze(f *testing.F) {
	for _, w := range workload {
		if len(w.sql) < 4096 {
			f.Add(w.sql)
		}
	}
	f.Add("SELECT * FROM invoices i LEFT JOIN LATERAL (SELECT * FROM items WHERE tenant_id = i.tenant_id) x ON true WHERE i.tenant_id = $1")
	f.Add("WITH RECURSIVE r AS (SELECT 1 UNION SELECT * FROM r) SELECT * FROM r, invoices")
	cat := testCatalog(f)
	an := NewAnalyzer(cat)
	app := cat.Roles[oidApp]
	f.Fuzz(func(t *testing.T, sql string) {
		if len(sql) > 1<<16 {
			return
		}
		res := an.Analyze(0, sql, app)
		if strings.HasPrefix(res.Reason, "internal error") {
			t.Fatalf("analyzer panicked on %q: %s", sql, res.Reason)
		}
		if _, err := pg.Parse(sql); err != nil && res.Class() != ClassUnknown {
			t.Fatalf("unparseable %q: got %s, want unknown", sql, res.Class())
		}
		if res.Unknown && res.Class() != ClassUnknown {
			t.Fatalf("unknown analysis classed %s", res.Class())
		}
		if again := an.Analyze(0, sql, app); again.Class() != res.Class() {
			t.Fatalf("%q: verdict changed from %s to %s", sql, res.Class(), again.Class())
		}
	})
}
