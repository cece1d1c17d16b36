package pgmeter

import (
	"strings"
	"testing"
)

func TestOperation(t *testing.T) {
	cases := []struct{ sql, want string }{
		{"SELECT 1", "SELECT"},
		{"  select * from t where id = $1", "SELECT"},
		{"-- comment\nINSERT INTO t VALUES ($1)", "INSERT"},
		{"/* a /* nested */ comment */ update t set x = 1", "UPDATE"},
		{"(SELECT 1) UNION (SELECT 2)", "SELECT"},
		{"DELETE FROM t", "DELETE"},
		{"WITH a AS (SELECT 1), b(x) AS MATERIALIZED (DELETE FROM t RETURNING x) SELECT * FROM a, b", "SELECT"},
		{"with recursive r as (select 1 union all select n+1 from r) insert into t select * from r", "INSERT"},
		{"WITH u AS (SELECT 'a ) select' AS s, \"x(\" FROM t) UPDATE t SET s = u.s FROM u", "UPDATE"},
		{"WITH u AS (SELECT $$ ) delete $$ AS s) DELETE FROM t USING u", "DELETE"},
		{"WITH u AS (SELECT $q$ ) merge $q$) MERGE INTO t USING u ON true WHEN MATCHED THEN DELETE", "MERGE"},
		{"WITH x AS (SELECT 1)", "WITH"},
		{"begin isolation level serializable", "BEGIN"},
		{"START TRANSACTION", "BEGIN"},
		{"commit", "COMMIT"},
		{"SELECT set_config($1, $2, true)", "SELECT"},
		{"copy t from stdin", "COPY"},
		{"EXPLAIN ANALYZE SELECT 1", "EXPLAIN"},
		{"'literal' SELECT", "OTHER"},
		{"secret_table_name", "OTHER"},
		{"", "OTHER"},
		{";;  ", "OTHER"},
		{"SELECTX 1", "OTHER"},
		{"12345", "OTHER"},
		{"/* unterminated", "OTHER"},
	}
	for _, c := range cases {
		if got := Operation(c.sql); got != c.want {
			t.Errorf("Operation(%q) = %q, want %q", c.sql, got, c.want)
		}
	}
}

func TestFingerprint(t *testing.T) {
	a := "SELECT * FROM invoices WHERE tenant_id = $1 AND id = $2"
	if Fingerprint(a) != Fingerprint(a) {
		t.Fatal("not deterministic")
	}
	if Fingerprint(a) == Fingerprint(a+" ") {
		t.Fatal("different texts share a fingerprint")
	}
	// FNV-1a 64 of "a" is af63dc4c8601ec8c: stable across processes.
	if got := Fingerprint("a"); got != 0xaf63dc4c8601ec8c {
		t.Fatalf("Fingerprint(a) = %x, want af63dc4c8601ec8c", got)
	}
}

func TestStatementCacheIsBounded(t *testing.T) {
	s := statements{max: 2}
	for _, q := range []string{"SELECT 1", "SELECT 2", "SELECT 3", "SELECT 1"} {
		if st := s.get(q); st.op != "SELECT" || st.fp != Fingerprint(q) {
			t.Fatalf("get(%q) = %+v", q, st)
		}
	}
	if n := s.n.Load(); n != 2 {
		t.Fatalf("cached %d statements, want the bound 2", n)
	}
}

func TestValidSetting(t *testing.T) {
	for s, want := range map[string]bool{
		"app.current_tenant": true, "a.b": true, "app_1.tenant_2": true,
		"app": false, ".x": false, "x.": false, "a.b.c": false, "1a.b": false, "a.1b": false,
		"a.b'; DROP TABLE t; --": false, "a b.c": false, "": false,
		"a." + strings.Repeat("b", 70): false,
	} {
		if got := validSetting(s); got != want {
			t.Errorf("validSetting(%q) = %v, want %v", s, got, want)
		}
	}
}

// FuzzOperation: any text gives one of the fixed operations and never a
// piece of itself (so no literal leaves the process), without panicking.
func FuzzOperation(f *testing.F) {
	for _, s := range []string{"SELECT 1", "WITH a AS (SELECT $$x$$) DELETE FROM t", "/* /* */", "$1$", "'", `"`, "(((", "$a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		op := Operation(sql)
		if op == "OTHER" || op == "WITH" {
			return
		}
		if command(op) != op {
			t.Fatalf("Operation(%q) = %q, not a known command", sql, op)
		}
	})
}
