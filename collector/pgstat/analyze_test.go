package pgstat

import (
	"reflect"
	"strings"
	"testing"
)

// Roles of the hand-built catalog.
const (
	oidOwner  = 20
	oidApp    = 30
	oidSuper  = 40
	oidBypass = 50
)

// testCatalog mirrors testdata/schema.sql, built by hand for unit tests.
func testCatalog(t testing.TB) *Catalog {
	t.Helper()
	cfg := DefaultConfig()
	guc := "current_setting('app.current_tenant'::text)"
	tbl := func(schema, name string, cols ...string) *Table {
		return &Table{Schema: schema, Name: name, Kind: "table", Columns: cols, Owner: "owner", OwnerOID: oidOwner}
	}
	tenants := tbl("public", "tenants", "id", "name")
	projects := tbl("public", "projects", "id", "tenant_id", "name")
	projects.RLSEnabled, projects.RLSForced = true, true
	projects.Policies = []Policy{{Name: "projects_tenant", Cmd: "ALL", Permissive: true, Roles: []string{"public"},
		Using: "(tenant_id = " + guc + ")"}}
	invoices := tbl("public", "invoices", "id", "tenant_id", "project_id", "amount", "status")
	items := tbl("public", "items", "id", "tenant_id", "invoice_id", "sku", "qty")
	users := tbl("public", "users", "id", "tenant_id", "email")
	auditLog := tbl("public", "audit_log", "id", "tenant_id", "msg")
	auditLog.RLSEnabled = true
	notes := tbl("public", "notes", "id", "tenant_id", "body")
	notes.RLSEnabled = true
	notes.Policies = []Policy{{Name: "notes_all", Cmd: "ALL", Permissive: true, Roles: []string{"public"}, Using: "true"}}
	docs := tbl("public", "docs", "id", "tenant_id", "title")
	docs.RLSEnabled = true
	docs.Owner, docs.OwnerOID = "app", oidApp
	docs.Policies = []Policy{{Name: "docs_tenant", Cmd: "ALL", Permissive: true, Roles: []string{"public"},
		Using: "(tenant_id = " + guc + ")"}}
	ledger := tbl("Billing", "Ledger", "id", "tenant_id", "amount")
	countries := tbl("public", "countries", "code", "name")
	totals := &Table{Schema: "public", Name: "invoice_totals", Kind: "view", Columns: []string{"tenant_id", "total"},
		Owner: "owner", OwnerOID: oidOwner, BaseTables: []string{"public.invoices"},
		ViewDef: " SELECT tenant_id, sum(amount) AS total FROM invoices GROUP BY tenant_id;"}
	mine := &Table{Schema: "public", Name: "my_projects", Kind: "view", Columns: []string{"id", "tenant_id", "name"},
		Owner: "owner", OwnerOID: oidOwner, BaseTables: []string{"public.projects"},
		ViewDef: " SELECT id, tenant_id, name FROM projects WHERE tenant_id = current_setting('app.current_tenant'::text);"}
	tables := []*Table{tenants, projects, invoices, items, users, auditLog, notes, docs, ledger, countries, totals, mine}
	markTenantTables(tables, cfg, nil)
	for _, tb := range tables {
		for i := range tb.Policies {
			analyzePolicy(&tb.Policies[i], tb, cfg.TenantGUC)
		}
	}
	roles := []*Role{
		{OID: oidOwner, Name: "owner", Inherit: true},
		{OID: oidApp, Name: "app", Inherit: true},
		{OID: oidSuper, Name: "postgres", Super: true, Inherit: true},
		{OID: oidBypass, Name: "etl", BypassRLS: true, Inherit: true},
	}
	return NewCatalog("test", cfg.TenantColumn, cfg.TenantGUC, tables, roles)
}

type analyzeCase struct {
	name   string
	sql    string
	role   uint32 // 0: app
	class  Class
	tables []string // unrestricted tables
}

func runCases(t *testing.T, cases []analyzeCase) {
	t.Helper()
	cat := testCatalog(t)
	an := NewAnalyzer(cat)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			role := cat.Roles[oidApp]
			if c.role != 0 {
				role = cat.Roles[c.role]
			}
			res := an.Analyze(0, c.sql, role)
			if got := res.Class(); got != c.class {
				t.Fatalf("class: got %s, want %s (reason %q, uses %+v)\nsql: %s", got, c.class, res.Reason, res.Uses, c.sql)
			}
			got := res.Unrestricted()
			if len(got) == 0 {
				got = nil
			}
			if !reflect.DeepEqual(got, c.tables) {
				t.Fatalf("tables: got %v, want %v (uses %+v)\nsql: %s", got, c.tables, res.Uses, c.sql)
			}
		})
	}
}

func TestAnalyzeBasics(t *testing.T) {
	runCases(t, []analyzeCase{
		{"param", "SELECT * FROM invoices WHERE tenant_id = $1", 0, ClassClean, nil},
		{"param reversed", "SELECT * FROM invoices WHERE $1 = tenant_id AND status = $2", 0, ClassClean, nil},
		{"constant", "SELECT * FROM invoices WHERE tenant_id = 42", 0, ClassClean, nil},
		{"no filter", "SELECT * FROM invoices WHERE status = $1", 0, ClassUnscoped, []string{"public.invoices"}},
		{"no where", "SELECT count(*) FROM invoices", 0, ClassUnscoped, []string{"public.invoices"}},
		{"non tenant table", "SELECT * FROM countries", 0, ClassClean, nil},
		{"no table", "SELECT 1", 0, ClassClean, nil},
		{"current_setting", "SELECT * FROM invoices WHERE tenant_id = current_setting($1)::bigint", 0, ClassClean, nil},
		{"select current_setting", "SELECT * FROM invoices WHERE tenant_id = (SELECT current_setting($1)::bigint)", 0, ClassClean, nil},
		{"cast column", "SELECT * FROM invoices WHERE tenant_id::text = $1", 0, ClassClean, nil},
		{"is not distinct", "SELECT * FROM invoices WHERE tenant_id IS NOT DISTINCT FROM $1", 0, ClassClean, nil},
		{"row compare", "SELECT * FROM invoices WHERE (tenant_id, id) = ($1, $2)", 0, ClassClean, nil},
	})
}

func TestAnalyzeJoins(t *testing.T) {
	runCases(t, []analyzeCase{
		{"one side filtered", "SELECT * FROM invoices i JOIN items it ON it.invoice_id = i.id WHERE i.tenant_id = $1",
			0, ClassUnscoped, []string{"public.items"}},
		{"equality carried", "SELECT * FROM invoices i JOIN items it ON it.invoice_id = i.id AND it.tenant_id = i.tenant_id WHERE i.tenant_id = $1",
			0, ClassClean, nil},
		{"equality carried in where", "SELECT * FROM users p, invoices i WHERE p.tenant_id = i.tenant_id AND i.tenant_id = $1",
			0, ClassClean, nil},
		{"equality chain", "SELECT * FROM users u JOIN invoices i ON i.tenant_id = u.tenant_id JOIN items it ON it.tenant_id = i.tenant_id WHERE u.tenant_id = $1",
			0, ClassClean, nil},
		{"using", "SELECT * FROM invoices JOIN items USING (tenant_id) WHERE invoices.tenant_id = $1", 0, ClassClean, nil},
		{"left join filter only in on", "SELECT * FROM invoices i LEFT JOIN items it ON it.invoice_id = i.id AND i.tenant_id = $1",
			0, ClassUnscoped, []string{"public.invoices", "public.items"}},
		{"left join right side filtered in on", "SELECT * FROM invoices i LEFT JOIN items it ON it.invoice_id = i.id AND it.tenant_id = $1 WHERE i.tenant_id = $2",
			0, ClassClean, nil},
		{"left join carried", "SELECT * FROM invoices i LEFT JOIN items it ON it.tenant_id = i.tenant_id WHERE i.tenant_id = $1",
			0, ClassClean, nil},
		{"right join filter in on", "SELECT * FROM items it RIGHT JOIN invoices i ON it.invoice_id = i.id AND it.tenant_id = $1",
			0, ClassUnscoped, []string{"public.invoices"}},
		{"full join", "SELECT * FROM invoices i FULL JOIN items it ON it.tenant_id = i.tenant_id AND i.tenant_id = $1",
			0, ClassUnscoped, []string{"public.invoices", "public.items"}},
		{"join non tenant", "SELECT * FROM invoices i JOIN countries c ON c.code = i.status WHERE i.tenant_id = $1", 0, ClassClean, nil},
	})
}

func TestAnalyzeOr(t *testing.T) {
	runCases(t, []analyzeCase{
		{"or other column", "SELECT * FROM invoices WHERE tenant_id = $1 OR status = $2", 0, ClassUnscoped, []string{"public.invoices"}},
		{"or bare param", "SELECT * FROM invoices WHERE tenant_id = $1 OR $2", 0, ClassUnscoped, []string{"public.invoices"}},
		{"or bare param first", "SELECT * FROM invoices WHERE ($1 OR tenant_id = $2) AND status = $3", 0, ClassUnscoped, []string{"public.invoices"}},
		{"or true", "SELECT * FROM invoices WHERE tenant_id = $1 OR true", 0, ClassUnscoped, []string{"public.invoices"}},
		{"or same param", "SELECT * FROM invoices WHERE (tenant_id = $1 AND status = $2) OR (tenant_id = $1 AND status = $3)", 0, ClassClean, nil},
		{"or two tenants", "SELECT * FROM invoices WHERE tenant_id = $1 OR tenant_id = $2", 0, ClassMultiTenant, []string{"public.invoices"}},
		{"or inside and", "SELECT * FROM invoices WHERE tenant_id = $1 AND (status = $2 OR $3)", 0, ClassClean, nil},
	})
}

func TestAnalyzeLists(t *testing.T) {
	runCases(t, []analyzeCase{
		{"in list", "SELECT * FROM invoices WHERE tenant_id IN ($1, $2)", 0, ClassMultiTenant, []string{"public.invoices"}},
		{"in one", "SELECT * FROM invoices WHERE tenant_id IN ($1)", 0, ClassClean, nil},
		{"any param", "SELECT * FROM invoices WHERE tenant_id = ANY($1)", 0, ClassMultiTenant, []string{"public.invoices"}},
		{"any array", "SELECT * FROM invoices WHERE tenant_id = ANY(ARRAY[$1, $2])", 0, ClassMultiTenant, []string{"public.invoices"}},
		{"in list and single", "SELECT * FROM invoices WHERE tenant_id IN ($1, $2) AND tenant_id = $3", 0, ClassClean, nil},
		{"not in", "SELECT * FROM invoices WHERE tenant_id NOT IN ($1, $2)", 0, ClassUnscoped, []string{"public.invoices"}},
		{"in select unscoped", "SELECT * FROM invoices WHERE tenant_id IN (SELECT tenant_id FROM users WHERE email = $1)",
			0, ClassUnscoped, []string{"public.invoices", "public.users"}},
		{"in select non tenant", "SELECT * FROM invoices WHERE tenant_id IN (SELECT id FROM tenants WHERE name = $1)",
			0, ClassUnscoped, []string{"public.invoices"}},
		{"in select scoped", "SELECT * FROM invoices WHERE tenant_id IN (SELECT tenant_id FROM users WHERE tenant_id = $1 AND email = $2)",
			0, ClassClean, nil},
		{"in select multi", "SELECT * FROM invoices WHERE tenant_id IN (SELECT tenant_id FROM users WHERE tenant_id = ANY($1))",
			0, ClassMultiTenant, []string{"public.invoices", "public.users"}},
		{"scalar subquery unscoped", "SELECT * FROM invoices WHERE tenant_id = (SELECT tenant_id FROM users WHERE id = $1)",
			0, ClassUnscoped, []string{"public.invoices", "public.users"}},
	})
}

func TestAnalyzeFakeFilters(t *testing.T) {
	runCases(t, []analyzeCase{
		{"self equality", "SELECT * FROM invoices WHERE tenant_id = tenant_id", 0, ClassUnscoped, []string{"public.invoices"}},
		{"qualified self equality", "SELECT * FROM invoices i WHERE i.tenant_id = invoices_x.tenant_id", 0, ClassUnscoped, []string{"public.invoices"}},
		{"is not null", "SELECT * FROM invoices WHERE tenant_id IS NOT NULL", 0, ClassUnscoped, []string{"public.invoices"}},
		{"not equal", "SELECT * FROM invoices WHERE tenant_id <> $1", 0, ClassUnscoped, []string{"public.invoices"}},
		{"greater", "SELECT * FROM invoices WHERE tenant_id > $1", 0, ClassUnscoped, []string{"public.invoices"}},
		{"like", "SELECT * FROM invoices WHERE tenant_id::text LIKE $1", 0, ClassUnscoped, []string{"public.invoices"}},
		{"coalesce trick", "SELECT * FROM invoices WHERE tenant_id = coalesce($1, tenant_id)", 0, ClassUnscoped, []string{"public.invoices"}},
		{"not", "SELECT * FROM invoices WHERE NOT (tenant_id <> $1)", 0, ClassUnscoped, []string{"public.invoices"}},
	})
}

func TestAnalyzeSubqueries(t *testing.T) {
	runCases(t, []analyzeCase{
		{"cte filtered inside", "WITH x AS (SELECT * FROM invoices WHERE tenant_id = $1) SELECT * FROM x", 0, ClassClean, nil},
		{"cte filtered outside", "WITH x AS (SELECT * FROM invoices) SELECT * FROM x WHERE tenant_id = $1", 0, ClassClean, nil},
		{"cte unfiltered", "WITH x AS (SELECT * FROM invoices) SELECT * FROM x", 0, ClassUnscoped, []string{"public.invoices"}},
		{"cte unreferenced", "WITH x AS (SELECT * FROM items) SELECT * FROM invoices WHERE tenant_id = $1", 0, ClassUnscoped, []string{"public.items"}},
		{"cte columns", "WITH x(t, n) AS (SELECT tenant_id, id FROM invoices) SELECT * FROM x WHERE x.t = $1", 0, ClassClean, nil},
		{"dml cte", "WITH d AS (DELETE FROM items WHERE qty = $1 RETURNING id) SELECT count(*) FROM d", 0, ClassUnscoped, []string{"public.items"}},
		{"recursive cte", "WITH RECURSIVE r AS (SELECT id, tenant_id FROM items WHERE tenant_id = $1 UNION ALL SELECT i.id, i.tenant_id FROM items i JOIN r ON i.invoice_id = r.id AND i.tenant_id = r.tenant_id) SELECT * FROM r",
			0, ClassUnscoped, []string{"public.items"}},
		{"subquery pushdown", "SELECT * FROM (SELECT * FROM invoices WHERE status = $1) s WHERE s.tenant_id = $2", 0, ClassClean, nil},
		{"subquery unfiltered", "SELECT * FROM (SELECT * FROM invoices WHERE status = $1) s", 0, ClassUnscoped, []string{"public.invoices"}},
		{"subquery pin upward", "SELECT * FROM (SELECT tenant_id, id FROM invoices WHERE tenant_id = $1) s JOIN items it ON it.tenant_id = s.tenant_id",
			0, ClassClean, nil},
		{"exists correlated", "SELECT * FROM invoices i WHERE i.tenant_id = $1 AND EXISTS (SELECT 1 FROM items it WHERE it.invoice_id = i.id AND it.tenant_id = i.tenant_id)",
			0, ClassClean, nil},
		{"exists unfiltered", "SELECT * FROM invoices i WHERE i.tenant_id = $1 AND EXISTS (SELECT 1 FROM items it WHERE it.invoice_id = i.id)",
			0, ClassUnscoped, []string{"public.items"}},
		{"not exists", "SELECT * FROM invoices i WHERE i.tenant_id = $1 AND NOT EXISTS (SELECT 1 FROM items it WHERE it.invoice_id = i.id AND it.tenant_id = $1)",
			0, ClassClean, nil},
		{"lateral correlated", "SELECT * FROM invoices i, LATERAL (SELECT * FROM items it WHERE it.invoice_id = i.id AND it.tenant_id = i.tenant_id) x WHERE i.tenant_id = $1",
			0, ClassClean, nil},
		{"lateral unfiltered", "SELECT * FROM invoices i CROSS JOIN LATERAL (SELECT * FROM items it WHERE it.invoice_id = i.id LIMIT $2) x WHERE i.tenant_id = $1",
			0, ClassUnscoped, []string{"public.items"}},
		{"scalar in target", "SELECT i.id, (SELECT count(*) FROM items it WHERE it.invoice_id = i.id) FROM invoices i WHERE i.tenant_id = $1",
			0, ClassUnscoped, []string{"public.items"}},
		{"scalar in target scoped", "SELECT i.id, (SELECT count(*) FROM items it WHERE it.invoice_id = i.id AND it.tenant_id = i.tenant_id) FROM invoices i WHERE i.tenant_id = $1",
			0, ClassClean, nil},
		{"union one branch", "SELECT id FROM invoices WHERE tenant_id = $1 UNION SELECT id FROM items", 0, ClassUnscoped, []string{"public.items"}},
		{"union both", "SELECT id FROM invoices WHERE tenant_id = $1 UNION ALL SELECT id FROM items WHERE tenant_id = $1", 0, ClassClean, nil},
		{"union pushdown", "SELECT * FROM (SELECT tenant_id, id FROM invoices UNION ALL SELECT tenant_id, id FROM items) u WHERE u.tenant_id = $1",
			0, ClassClean, nil},
		{"union pushdown partial", "SELECT * FROM (SELECT tenant_id, id FROM invoices UNION ALL SELECT id, tenant_id FROM items) u WHERE u.tenant_id = $1",
			0, ClassUnscoped, []string{"public.items"}},
	})
}

func TestAnalyzeDML(t *testing.T) {
	runCases(t, []analyzeCase{
		{"insert values", "INSERT INTO items (tenant_id, sku) VALUES ($1, $2)", 0, ClassClean, nil},
		{"insert no tenant", "INSERT INTO items (sku) VALUES ($1)", 0, ClassUnscoped, []string{"public.items"}},
		{"insert multi row", "INSERT INTO items (tenant_id, sku) VALUES ($1, $2), ($3, $4)", 0, ClassClean, nil},
		{"insert multi row missing tenant", "INSERT INTO items (tenant_id, sku) VALUES ($1, $2), (DEFAULT, $4)", 0, ClassUnscoped, []string{"public.items"}},
		{"insert select unscoped", "INSERT INTO items (tenant_id, invoice_id, sku) SELECT tenant_id, id, $1 FROM invoices WHERE status = $2",
			0, ClassUnscoped, []string{"public.invoices", "public.items"}},
		{"insert select scoped", "INSERT INTO items (tenant_id, invoice_id) SELECT tenant_id, id FROM invoices WHERE tenant_id = $1",
			0, ClassClean, nil},
		{"insert on conflict", "INSERT INTO items (tenant_id, sku) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET qty = excluded.qty", 0, ClassClean, nil},
		{"update scoped", "UPDATE invoices SET status = $1 WHERE tenant_id = $2 AND id = $3", 0, ClassClean, nil},
		{"update no where", "UPDATE invoices SET status = $1", 0, ClassUnscoped, []string{"public.invoices"}},
		{"delete no where", "DELETE FROM items", 0, ClassUnscoped, []string{"public.items"}},
		{"update from unscoped target", "UPDATE items it SET qty = $1 FROM invoices i WHERE it.invoice_id = i.id AND i.tenant_id = $2",
			0, ClassUnscoped, []string{"public.items"}},
		{"update from scoped", "UPDATE items it SET qty = $1 FROM invoices i WHERE it.invoice_id = i.id AND it.tenant_id = i.tenant_id AND i.tenant_id = $2",
			0, ClassClean, nil},
		{"update set subquery", "UPDATE invoices SET amount = (SELECT sum(qty) FROM items WHERE invoice_id = $1) WHERE tenant_id = $2",
			0, ClassUnscoped, []string{"public.items"}},
		{"delete using unscoped", "DELETE FROM items it USING invoices i WHERE it.invoice_id = i.id AND i.tenant_id = $1",
			0, ClassUnscoped, []string{"public.items"}},
		{"delete using scoped", "DELETE FROM items it USING invoices i WHERE it.invoice_id = i.id AND it.tenant_id = i.tenant_id AND i.tenant_id = $1",
			0, ClassClean, nil},
		{"merge scoped", "MERGE INTO items t USING (SELECT * FROM invoices WHERE tenant_id = $1) s ON t.invoice_id = s.id AND t.tenant_id = s.tenant_id WHEN MATCHED THEN UPDATE SET qty = $2",
			0, ClassClean, nil},
		{"merge target unscoped", "MERGE INTO items t USING (SELECT * FROM invoices WHERE tenant_id = $1) s ON t.invoice_id = s.id WHEN MATCHED THEN DELETE",
			0, ClassUnscoped, []string{"public.items"}},
		{"merge source unscoped", "MERGE INTO items t USING invoices s ON t.invoice_id = s.id AND t.tenant_id = s.tenant_id AND s.tenant_id = $1 WHEN MATCHED THEN UPDATE SET qty = $2",
			0, ClassUnscoped, []string{"public.invoices"}},
	})
}

func TestAnalyzeNames(t *testing.T) {
	runCases(t, []analyzeCase{
		{"schema qualified", "SELECT * FROM public.invoices WHERE public.invoices.tenant_id = $1", 0, ClassClean, nil},
		{"alias", "SELECT * FROM public.invoices AS inv WHERE inv.status = $1", 0, ClassUnscoped, []string{"public.invoices"}},
		{"quoted", `SELECT * FROM "Billing"."Ledger" l WHERE l.tenant_id = $1`, 0, ClassClean, nil},
		{"quoted unscoped", `SELECT * FROM "Billing"."Ledger"`, 0, ClassUnscoped, []string{"Billing.Ledger"}},
		{"quoted unqualified", `SELECT * FROM "Ledger" WHERE "tenant_id" = $1`, 0, ClassClean, nil},
		{"lowercase differs", `SELECT * FROM billing.ledger`, 0, ClassClean, nil},
		{"alias columns", "SELECT * FROM invoices AS i(a, b) WHERE i.b = $1", 0, ClassClean, nil},
		{"alias columns wrong", "SELECT * FROM invoices AS i(a, b) WHERE i.a = $1", 0, ClassUnscoped, []string{"public.invoices"}},
	})
}

func TestAnalyzeUtility(t *testing.T) {
	runCases(t, []analyzeCase{
		{"set", "SET app.current_tenant = $1", 0, ClassClean, nil},
		{"begin", "BEGIN", 0, ClassClean, nil},
		{"ddl", "CREATE TABLE x (a int)", 0, ClassClean, nil},
		{"vacuum", "VACUUM invoices", 0, ClassClean, nil},
		{"copy to", "COPY invoices TO STDOUT", 0, ClassUnscoped, []string{"public.invoices"}},
		{"copy columns to", "COPY public.items (id, sku) TO STDOUT WITH (FORMAT csv)", 0, ClassUnscoped, []string{"public.items"}},
		{"copy from", "COPY invoices FROM STDIN", 0, ClassClean, nil},
		{"copy query", "COPY (SELECT * FROM invoices WHERE tenant_id = 1) TO STDOUT", 0, ClassClean, nil},
		{"copy query unscoped", "COPY (SELECT * FROM invoices) TO STDOUT", 0, ClassUnscoped, []string{"public.invoices"}},
		{"copy rls table", "COPY projects TO STDOUT", 0, ClassClean, nil},
		{"create table as", "CREATE TABLE snap AS SELECT * FROM invoices", 0, ClassUnscoped, []string{"public.invoices"}},
		{"declare cursor", "DECLARE c CURSOR FOR SELECT * FROM invoices", 0, ClassUnscoped, []string{"public.invoices"}},
	})
}

func TestAnalyzeUnknown(t *testing.T) {
	runCases(t, []analyzeCase{
		{"garbage", "SELEC * FROM invoices", 0, ClassUnknown, nil},
		{"truncated", "SELECT * FROM invoices WHERE tenant_id = ", 0, ClassUnknown, nil},
		{"empty is clean", "", 0, ClassClean, nil},
		{"too large", "SELECT " + strings.Repeat("1,", MaxQueryBytes/2) + "1", 0, ClassUnknown, nil},
	})
}

func TestAnalyzeRLS(t *testing.T) {
	runCases(t, []analyzeCase{
		{"rls app", "SELECT * FROM projects WHERE name = $1", 0, ClassClean, nil},
		{"rls forced owner", "SELECT * FROM projects WHERE name = $1", oidOwner, ClassClean, nil},
		{"rls superuser", "SELECT * FROM projects WHERE name = $1", oidSuper, ClassUnscoped, []string{"public.projects"}},
		{"rls bypass", "SELECT * FROM projects", oidBypass, ClassUnscoped, []string{"public.projects"}},
		{"rls not forced owner", "SELECT * FROM docs", 0, ClassUnscoped, []string{"public.docs"}},
		{"rls not forced other role", "SELECT * FROM docs", oidOwner, ClassClean, nil},
		{"rls always true policy", "SELECT * FROM notes", 0, ClassUnscoped, []string{"public.notes"}},
		{"rls no policy denies", "SELECT * FROM audit_log", 0, ClassClean, nil},
		{"join through rls table", "SELECT * FROM projects p JOIN invoices i ON i.project_id = p.id AND i.tenant_id = p.tenant_id", 0, ClassClean, nil},
		{"join rls not carried", "SELECT * FROM projects p JOIN invoices i ON i.project_id = p.id", 0, ClassUnscoped, []string{"public.invoices"}},
		{"unknown role", "SELECT * FROM projects", 99, ClassUnscoped, []string{"public.projects"}},
	})
}

func TestAnalyzeViews(t *testing.T) {
	runCases(t, []analyzeCase{
		{"view unscoped", "SELECT * FROM invoice_totals", 0, ClassUnscoped, []string{"public.invoices"}},
		{"view pushdown", "SELECT * FROM invoice_totals WHERE tenant_id = $1", 0, ClassClean, nil},
		{"view with predicate", "SELECT * FROM my_projects", oidSuper, ClassClean, nil},
		{"view rls as owner", "SELECT * FROM my_projects WHERE name = $1", 0, ClassClean, nil},
	})
}

func TestAnalyzeCache(t *testing.T) {
	cat := testCatalog(t)
	an := NewAnalyzer(cat)
	app := cat.Roles[oidApp]
	q := "SELECT * FROM invoices WHERE status = $1"
	first := an.Analyze(7, q, app)
	if an.Parses() != 1 {
		t.Fatalf("parses after first: got %d, want 1", an.Parses())
	}
	second := an.Analyze(7, q, app)
	if an.Parses() != 1 || first != second {
		t.Fatalf("parses after second: got %d, want 1 (same result %v)", an.Parses(), first == second)
	}
	// A role for which RLS protects other tables gets its own verdict.
	an.Analyze(7, q, cat.Roles[oidSuper])
	if an.Parses() != 2 {
		t.Fatalf("parses for another RLS profile: got %d, want 2", an.Parses())
	}
	// Roles with the same RLS profile share the verdict.
	an.Analyze(7, q, cat.Roles[oidBypass])
	if an.Parses() != 2 {
		t.Fatalf("parses for same profile: got %d, want 2", an.Parses())
	}
}

func TestPolicyAnalysis(t *testing.T) {
	tb := &Table{Schema: "public", Name: "t", Kind: "table", Columns: []string{"id", "tenant_id"}}
	markTenantTables([]*Table{tb}, DefaultConfig(), nil)
	cases := []struct {
		using               string
		uses, scopes, true_ bool
	}{
		{"(tenant_id = current_setting('app.current_tenant'::text))", true, true, false},
		{"(tenant_id = (current_setting('app.current_tenant'::text))::integer)", true, true, false},
		{"(tenant_id = ( SELECT current_setting('app.current_tenant'::text, true) AS current_setting))", true, true, false},
		{"((tenant_id = current_setting('app.current_tenant'::text)) OR true)", true, false, true},
		{"(tenant_id = current_setting('app.other'::text))", false, false, false},
		{"(current_setting('app.current_tenant'::text) IS NOT NULL)", true, false, false},
		{"true", false, false, true},
		{"(tenant_id = tenant_id)", false, false, true},
		{"(tenant_id IN ( SELECT m.tenant_id FROM members m WHERE (m.user_id = current_setting('app.user'::text))))", false, false, false},
	}
	for _, c := range cases {
		p := Policy{Cmd: "ALL", Using: c.using}
		analyzePolicy(&p, tb, "app.current_tenant")
		if p.UsesGUC != c.uses || p.Scopes != c.scopes || p.AlwaysTrue != c.true_ {
			t.Errorf("%s: got uses=%v scopes=%v true=%v, want %v %v %v", c.using, p.UsesGUC, p.Scopes, p.AlwaysTrue, c.uses, c.scopes, c.true_)
		}
	}
}
