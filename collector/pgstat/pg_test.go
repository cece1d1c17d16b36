package pgstat

import (
	"context"
	"errors"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// pgEnv is a fresh database loaded with testdata/schema.sql and three
// roles: owner (owns the tables), app (runs the workload), auditor
// (pg_read_all_stats).
type pgEnv struct {
	db, super, app, auditor string
	appRole, ownerRole      string
}

func withUser(dsn, user string) string {
	return strings.Replace(dsn, "postgres://postgres@", "postgres://"+user+"@", 1)
}

func setupPG(t testing.TB) *pgEnv {
	t.Helper()
	_, dsn := testenv.Postgres(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	e := &pgEnv{db: db, super: dsn, appRole: "app_" + db, ownerRole: "owner_" + db}
	auditor := "auditor_" + db
	for _, q := range []string{
		"CREATE ROLE " + e.ownerRole,
		"CREATE ROLE " + e.appRole + " LOGIN",
		"CREATE ROLE " + auditor + " LOGIN",
		"GRANT pg_read_all_stats TO " + auditor,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		ctx := context.Background()
		c, err := pgx.Connect(ctx, strings.Replace(dsn, "/"+db+"?", "/postgres?", 1))
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
		for _, r := range []string{e.appRole, e.ownerRole, auditor} {
			_, _ = c.Exec(ctx, "DROP ROLE IF EXISTS "+r)
		}
	})
	schema, err := os.ReadFile("testdata/schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	sql := strings.NewReplacer("{owner}", e.ownerRole, "{app}", e.appRole).Replace(string(schema))
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("load schema: %v", err)
	}
	e.app, e.auditor = withUser(dsn, e.appRole), withUser(dsn, auditor)
	return e
}

type workItem struct {
	sql    string
	args   []any
	stored string // the text pg_stat_statements stores, when normalisation changes it
	class  Class  // "" for clean
	tables []string
}

var bigComment = "/* " + strings.Repeat("x", MaxQueryBytes+10) + " */"

// workload covers every case of issue 3, run as the application role.
var workload = []workItem{
	// clean
	{sql: "SELECT id FROM invoices WHERE tenant_id = $1", args: []any{1}},
	{sql: "SELECT i.id FROM invoices i JOIN items it ON it.invoice_id = i.id AND it.tenant_id = i.tenant_id WHERE i.tenant_id = $1", args: []any{1}},
	{sql: "WITH x AS (SELECT * FROM invoices) SELECT id FROM x WHERE tenant_id = $1", args: []any{1}},
	{sql: "SELECT i.id, x.sku FROM invoices i, LATERAL (SELECT sku FROM items it WHERE it.invoice_id = i.id AND it.tenant_id = i.tenant_id) x WHERE i.tenant_id = $1", args: []any{1}},
	{sql: "SELECT id FROM invoices WHERE tenant_id = $1 UNION ALL SELECT id FROM items WHERE tenant_id = $1", args: []any{1}},
	{sql: "INSERT INTO items (tenant_id, invoice_id, sku, qty) VALUES ($1, $2, $3, $4)", args: []any{1, 1, "c", 1}},
	{sql: "MERGE INTO items t USING (SELECT id, tenant_id FROM invoices WHERE tenant_id = $1) s ON t.invoice_id = s.id AND t.tenant_id = s.tenant_id WHEN MATCHED THEN UPDATE SET qty = $2", args: []any{1, 5}},
	{sql: `SELECT id FROM "Billing"."Ledger" l WHERE l.tenant_id = $1`, args: []any{1}},
	{sql: "SELECT id FROM projects WHERE name = $1", args: []any{"p1"}},
	{sql: "SELECT id FROM audit_log WHERE msg = $1", args: []any{"m"}},
	{sql: "SELECT tenant_id, total FROM invoice_totals WHERE tenant_id = $1", args: []any{1}},
	{sql: "SELECT id, name FROM my_projects"},
	{sql: "SELECT code FROM countries WHERE name = $1", args: []any{"x"}},
	{sql: "UPDATE invoices SET status = $1 WHERE tenant_id = $2 AND id = $3", args: []any{"open", 1, 1}},
	// unscoped
	{sql: "SELECT id FROM invoices WHERE status = $1", args: []any{"open"}, class: ClassUnscoped, tables: []string{"public.invoices"}},
	{sql: "SELECT i.id FROM invoices i JOIN items it ON it.invoice_id = i.id WHERE i.tenant_id = $1", args: []any{1},
		class: ClassUnscoped, tables: []string{"public.items"}},
	{sql: "SELECT i.id FROM invoices i LEFT JOIN items it ON it.invoice_id = i.id AND i.tenant_id = $1", args: []any{1},
		class: ClassUnscoped, tables: []string{"public.invoices", "public.items"}},
	{sql: "SELECT id FROM invoices WHERE tenant_id = $1 OR true", args: []any{1}, stored: "SELECT id FROM invoices WHERE tenant_id = $1 OR $2",
		class: ClassUnscoped, tables: []string{"public.invoices"}},
	{sql: "SELECT id FROM invoices WHERE tenant_id IN (SELECT tenant_id FROM users WHERE email = $1)", args: []any{"a@acme"},
		class: ClassUnscoped, tables: []string{"public.invoices", "public.users"}},
	{sql: "SELECT id FROM invoices WHERE tenant_id = tenant_id", class: ClassUnscoped, tables: []string{"public.invoices"}},
	{sql: "SELECT id FROM invoices WHERE tenant_id IS NOT NULL", class: ClassUnscoped, tables: []string{"public.invoices"}},
	{sql: "SELECT id FROM invoices WHERE tenant_id <> $1", args: []any{1}, class: ClassUnscoped, tables: []string{"public.invoices"}},
	{sql: "SELECT i.id FROM invoices i WHERE i.tenant_id = $1 AND EXISTS (SELECT it.id FROM items it WHERE it.invoice_id = i.id)", args: []any{1},
		class: ClassUnscoped, tables: []string{"public.items"}},
	{sql: "SELECT id FROM invoices WHERE tenant_id = $1 UNION SELECT id FROM items", args: []any{1}, class: ClassUnscoped, tables: []string{"public.items"}},
	{sql: "INSERT INTO items (tenant_id, invoice_id, sku) SELECT tenant_id, id, $1 FROM invoices WHERE status = $2", args: []any{"s", "none"},
		class: ClassUnscoped, tables: []string{"public.invoices", "public.items"}},
	{sql: "UPDATE items it SET qty = $1 FROM invoices i WHERE it.invoice_id = i.id AND i.tenant_id = $2", args: []any{3, 1},
		class: ClassUnscoped, tables: []string{"public.items"}},
	{sql: "DELETE FROM items it USING invoices i WHERE it.invoice_id = i.id AND i.tenant_id = $1 AND it.sku = $2", args: []any{1, "none"},
		class: ClassUnscoped, tables: []string{"public.items"}},
	{sql: "UPDATE invoices SET status = $1", args: []any{"open"}, class: ClassUnscoped, tables: []string{"public.invoices"}},
	{sql: "DELETE FROM users", class: ClassUnscoped, tables: []string{"public.users"}},
	{sql: "MERGE INTO items t USING (SELECT id, tenant_id FROM invoices WHERE tenant_id = $1) s ON t.invoice_id = s.id WHEN MATCHED THEN UPDATE SET qty = $2",
		args: []any{1, 6}, class: ClassUnscoped, tables: []string{"public.items"}},
	{sql: `SELECT id FROM "Billing"."Ledger" WHERE amount > $1`, args: []any{0}, class: ClassUnscoped, tables: []string{"Billing.Ledger"}},
	{sql: "COPY invoices TO STDOUT", class: ClassUnscoped, tables: []string{"public.invoices"}},
	{sql: "SELECT id FROM docs WHERE title = $1", args: []any{"d1"}, class: ClassUnscoped, tables: []string{"public.docs"}},
	{sql: "SELECT id FROM notes WHERE body = $1", args: []any{"n1"}, class: ClassUnscoped, tables: []string{"public.notes"}},
	{sql: "SELECT tenant_id, total FROM invoice_totals", class: ClassUnscoped, tables: []string{"public.invoices"}},
	// multi-tenant
	{sql: "SELECT id FROM invoices WHERE tenant_id IN ($1, $2)", args: []any{1, 2}, class: ClassMultiTenant, tables: []string{"public.invoices"}},
	{sql: "SELECT id FROM invoices WHERE tenant_id = ANY($1)", args: []any{[]int64{1, 2}}, class: ClassMultiTenant, tables: []string{"public.invoices"}},
	// unknown: longer than the analyzer accepts
	{sql: "SELECT id, status, amount FROM invoices WHERE tenant_id = $1 " + bigComment, args: []any{1}, class: ClassUnknown, tables: []string{}},
}

func runWorkload(t testing.TB, dsn string, items []workItem) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SET app.current_tenant = '1'"); err != nil {
		t.Fatal(err)
	}
	for _, w := range items {
		if strings.HasPrefix(w.sql, "COPY") {
			if _, err := conn.PgConn().CopyTo(ctx, io.Discard, w.sql); err != nil {
				t.Fatalf("%s: %v", w.sql, err)
			}
			continue
		}
		if _, err := conn.Exec(ctx, w.sql, w.args...); err != nil {
			t.Fatalf("%.120s: %v", w.sql, err)
		}
	}
}

func newTestStage(t testing.TB, dsn string, opts ...Option) *Stage {
	t.Helper()
	return newTestStageConfig(t, dsn, func(*Config) {}, opts...)
}

func newTestStageConfig(t testing.TB, dsn string, mod func(*Config), opts ...Option) *Stage {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DSNs = []string{dsn}
	mod(&cfg)
	s, err := New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func findingsByText(rep *Report) map[string]Finding {
	out := map[string]Finding{}
	for _, d := range rep.Databases {
		for _, f := range d.Findings {
			out[f.Query] = f
		}
	}
	return out
}

func TestScanFindsEveryCase(t *testing.T) {
	e := setupPG(t)
	runWorkload(t, e.app, workload)
	s := newTestStage(t, e.auditor)
	rep, err := s.Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Databases) != 1 || rep.Databases[0].Database != e.db {
		t.Fatalf("databases: got %+v, want one named %s", rep.Databases, e.db)
	}
	if v := rep.Databases[0].Extension; v == "" {
		t.Fatalf("extension version empty")
	}
	got := findingsByText(rep)
	want := map[string]workItem{}
	for _, w := range workload {
		if w.class == "" {
			continue
		}
		text := w.sql
		if w.stored != "" {
			text = w.stored
		}
		want[text] = w
	}
	for text, w := range want {
		f, ok := got[text]
		if !ok {
			t.Errorf("missing finding %s for %.100s", w.class, text)
			continue
		}
		tables := f.Tables
		if tables == nil {
			tables = []string{}
		}
		wt := w.tables
		if wt == nil {
			wt = []string{}
		}
		if f.Class != w.class || !reflect.DeepEqual(tables, wt) {
			t.Errorf("%.100s: got %s %v, want %s %v (reason %q)", text, f.Class, f.Tables, w.class, w.tables, f.Reason)
		}
		if f.Role != e.appRole || f.Calls != 1 {
			t.Errorf("%.100s: got role %s calls %d, want %s 1", text, f.Role, f.Calls, e.appRole)
		}
	}
	for text, f := range got {
		if _, ok := want[text]; !ok {
			t.Errorf("unexpected finding %s %v role %s: %.150s", f.Class, f.Tables, f.Role, text)
		}
	}

	type lintKey struct{ lint, table, policy, role string }
	var lints []lintKey
	for _, l := range rep.Databases[0].Lints {
		lints = append(lints, lintKey{l.Lint, l.Table, l.Policy, l.Role})
	}
	wantLints := []lintKey{
		{LintRLSDisabled, "Billing.Ledger", "", ""},
		{LintRLSDisabled, "public.invoices", "", ""},
		{LintRLSDisabled, "public.items", "", ""},
		{LintRLSDisabled, "public.users", "", ""},
		{LintNoPolicy, "public.audit_log", "", ""},
		{LintRLSNotForcedOwner, "public.docs", "", e.appRole},
		{LintPolicyAlwaysTrue, "public.notes", "notes_all", ""},
		{LintPolicyWithoutGUC, "public.notes", "notes_all", ""},
	}
	less := func(s []lintKey) func(i, j int) bool {
		return func(i, j int) bool {
			a, b := s[i], s[j]
			if a.table != b.table {
				return a.table < b.table
			}
			return a.lint < b.lint
		}
	}
	sort.Slice(lints, less(lints))
	sort.Slice(wantLints, less(wantLints))
	if !reflect.DeepEqual(lints, wantLints) {
		t.Errorf("lints:\n got %v\nwant %v", lints, wantLints)
	}
	if rep.Clean() {
		t.Errorf("report is clean, want findings")
	}
}

func TestPullDeltasAndCache(t *testing.T) {
	e := setupPG(t)
	runWorkload(t, e.app, workload[:20])
	s := newTestStage(t, e.auditor)
	ctx := context.Background()
	first, err := s.Scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The auditor's own queries of the first pull are new statements in
	// the second; from the third on, the workload is unchanged.
	if _, err := s.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	parses, fetches := s.Parses(), s.TextFetches()
	if parses == 0 || fetches == 0 {
		t.Fatalf("first pull: parses %d fetches %d, want > 0", parses, fetches)
	}

	// Unchanged workload: nothing parsed, no text fetched, no calls.
	_ = first
	second, err := s.Scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Parses() != parses || s.TextFetches() != fetches {
		t.Fatalf("second pull: parses %d->%d fetches %d->%d, want unchanged", parses, s.Parses(), fetches, s.TextFetches())
	}
	if len(findingsByText(second)) != len(findingsByText(first)) {
		t.Fatalf("second pull: %d findings, want %d", len(findingsByText(second)), len(findingsByText(first)))
	}
	for text, f := range findingsByText(second) {
		if f.Calls != 0 {
			t.Errorf("second pull %.60s: calls %d, want 0", text, f.Calls)
		}
	}

	// One known statement runs twice more and one new statement appears.
	runWorkload(t, e.app, []workItem{workload[14], workload[14], workload[30]})
	third, err := s.Scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := findingsByText(third)
	if f := got[workload[14].sql]; f.Calls != 2 {
		t.Errorf("third pull: repeated statement calls %d, want 2", f.Calls)
	}
	if f := got[workload[30].sql]; f.Calls != 1 || f.Class != ClassUnscoped {
		t.Errorf("third pull: new statement %+v, want unscoped with 1 call", f)
	}
	// Only the new statement's text is fetched and parsed.
	if d := s.TextFetches() - fetches; d != 1 {
		t.Errorf("third pull fetched %d texts, want 1", d)
	}
	if d := s.Parses() - parses; d != 1 {
		t.Errorf("third pull parsed %d texts, want 1", d)
	}

	// A reset (by someone else: the puller never resets) re-baselines.
	sup, err := pgx.Connect(ctx, e.super)
	if err != nil {
		t.Fatal(err)
	}
	defer sup.Close(ctx)
	if _, err := sup.Exec(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
		t.Fatal(err)
	}
	runWorkload(t, e.app, []workItem{workload[14]})
	fourth, err := s.Scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got = findingsByText(fourth)
	if f, ok := got[workload[14].sql]; !ok || f.Calls != 1 {
		t.Errorf("after reset: calls %d (present %v), want 1", f.Calls, ok)
	}
	if _, ok := got[workload[30].sql]; ok {
		t.Errorf("after reset: a statement gone from pg_stat_statements is still reported")
	}
}

func TestPullerRebaseOnReset(t *testing.T) {
	e := setupPG(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.auditor)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	p, err := newPuller(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	item := []workItem{workload[14]}
	for i := 0; i < 3; i++ {
		runWorkload(t, e.app, item)
	}
	if _, err := p.pull(ctx); err != nil {
		t.Fatal(err)
	}
	sup, err := pgx.Connect(ctx, e.super)
	if err != nil {
		t.Fatal(err)
	}
	defer sup.Close(ctx)
	if _, err := sup.Exec(ctx, "SELECT pg_stat_statements_reset()"); err != nil {
		t.Fatal(err)
	}
	// After the reset the counter is 2, below the 3 seen before: a naive
	// delta would underflow; a re-baseline reports the 2 calls.
	runWorkload(t, e.app, item)
	runWorkload(t, e.app, item)
	stmts, err := p.pull(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range stmts {
		if s.Text == item[0].sql {
			found = true
			if s.Calls != 2 || s.DeltaCalls != 2 {
				t.Errorf("after reset: calls %d delta %d, want 2 and 2", s.Calls, s.DeltaCalls)
			}
		}
	}
	if !found {
		t.Fatalf("statement not found after reset")
	}
}

func TestPrivilegeError(t *testing.T) {
	e := setupPG(t)
	s := newTestStage(t, e.app)
	_, err := s.Scan(context.Background())
	if !errors.Is(err, ErrInsufficientPrivilege) {
		t.Fatalf("got %v, want ErrInsufficientPrivilege", err)
	}
	if !strings.Contains(err.Error(), `GRANT pg_read_all_stats TO "`+e.appRole+`"`) {
		t.Fatalf("error %q does not say how to fix it", err)
	}
}

func TestNoExtensionError(t *testing.T) {
	e := setupPG(t)
	ctx := context.Background()
	sup, err := pgx.Connect(ctx, e.super)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sup.Exec(ctx, "DROP EXTENSION pg_stat_statements"); err != nil {
		t.Fatal(err)
	}
	sup.Close(ctx)
	_, err = newTestStage(t, e.super).Scan(ctx)
	if !errors.Is(err, ErrNoExtension) {
		t.Fatalf("got %v, want ErrNoExtension", err)
	}
}

type recordingAlerter struct{ got []Finding }

func (r *recordingAlerter) NewUnscoped(_ context.Context, f Finding) error {
	r.got = append(r.got, f)
	return nil
}

func TestAlertOnNewUnscoped(t *testing.T) {
	e := setupPG(t)
	runWorkload(t, e.app, workload[:16])
	al := &recordingAlerter{}
	s := newTestStage(t, e.auditor, WithAlerter(al), WithClock(func() time.Time { return time.Unix(1_800_000_000, 0) }))
	ctx := context.Background()
	s.tick(ctx)
	if len(al.got) != 0 {
		t.Fatalf("first pull alerted %d, want 0 (existing statements seed the set)", len(al.got))
	}
	s.tick(ctx)
	if len(al.got) != 0 {
		t.Fatalf("unchanged pull alerted %d, want 0", len(al.got))
	}
	runWorkload(t, e.app, []workItem{workload[16], workload[35]}) // unscoped, multi-tenant
	s.tick(ctx)
	if len(al.got) != 1 || al.got[0].Query != workload[16].sql || al.got[0].Class != ClassUnscoped {
		t.Fatalf("alerts: got %+v, want one for %q", al.got, workload[16].sql)
	}
}
