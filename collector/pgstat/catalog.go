package pgstat

import (
	"context"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Table is one relation of the audited database: a table, partitioned
// table, materialized view, foreign table or view.
type Table struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	// Kind is table, view, matview or foreign.
	Kind    string   `json:"kind"`
	Columns []string `json:"-"`
	// Tenant reports a tenant table; TenantColumn is the column that holds
	// the tenant.
	Tenant       bool   `json:"tenant"`
	TenantColumn string `json:"tenant_column,omitempty"`
	// TenantDefaultGUC reports that the tenant column defaults to an
	// expression reading the tenant GUC, so an INSERT that omits it is scoped.
	TenantDefaultGUC bool     `json:"-"`
	Owner            string   `json:"owner"`
	OwnerOID         uint32   `json:"-"`
	RLSEnabled       bool     `json:"rls_enabled"`
	RLSForced        bool     `json:"rls_forced"`
	Policies         []Policy `json:"policies,omitempty"`
	// View fields: the definition, security_invoker, and the base tables
	// the view reads, resolved through nested views.
	ViewDef         string   `json:"-"`
	SecurityInvoker bool     `json:"security_invoker,omitempty"`
	BaseTables      []string `json:"base_tables,omitempty"`

	colset map[string]bool
}

// QName is schema.name.
func (t *Table) QName() string { return t.Schema + "." + t.Name }

// HasColumn reports whether the relation has column c.
func (t *Table) HasColumn(c string) bool { return t.colset[c] }

// Policy is one row-level security policy.
type Policy struct {
	Name string `json:"name"`
	// Cmd is ALL, SELECT, INSERT, UPDATE or DELETE.
	Cmd        string   `json:"cmd"`
	Permissive bool     `json:"permissive"`
	Roles      []string `json:"roles"`
	Using      string   `json:"using,omitempty"`
	Check      string   `json:"with_check,omitempty"`
	// UsesGUC: the policy reads the tenant GUC somewhere.
	UsesGUC bool `json:"uses_tenant_guc"`
	// Scopes: USING pins the tenant column to the tenant GUC (or, for
	// INSERT-only policies, WITH CHECK does), so it restricts rows to one tenant.
	Scopes bool `json:"scopes_tenant"`
	// AlwaysTrue: USING or WITH CHECK is a constant true (or col = col).
	AlwaysTrue bool `json:"always_true"`
}

func (p Policy) appliesTo(cmd string) bool { return p.Cmd == "ALL" || p.Cmd == cmd }

// Role is a database role.
type Role struct {
	OID       uint32
	Name      string
	Super     bool
	BypassRLS bool
	Inherit   bool
	MemberOf  []uint32
}

// Catalog is the model of one database that the analyzer and the RLS
// audit work on.
type Catalog struct {
	Database     string
	TenantColumn string
	TenantGUC    string
	Tables       map[string]*Table // by schema.name
	Roles        map[uint32]*Role
	byName       map[string][]*Table
	rolesByName  map[string]*Role
	fingerprint  uint64
}

// NewCatalog indexes tables and roles. Tables' tenant flags, policies and
// view base tables must already be filled in (LoadCatalog does that); it
// is exported so unit tests can build a catalog by hand.
func NewCatalog(database, tenantColumn, tenantGUC string, tables []*Table, roles []*Role) *Catalog {
	c := &Catalog{
		Database: database, TenantColumn: tenantColumn, TenantGUC: tenantGUC,
		Tables: map[string]*Table{}, Roles: map[uint32]*Role{},
		byName: map[string][]*Table{}, rolesByName: map[string]*Role{},
	}
	h := fnv.New64a()
	sort.Slice(tables, func(i, j int) bool { return tables[i].QName() < tables[j].QName() })
	for _, t := range tables {
		t.colset = make(map[string]bool, len(t.Columns))
		for _, col := range t.Columns {
			t.colset[col] = true
		}
		c.Tables[t.QName()] = t
		c.byName[t.Name] = append(c.byName[t.Name], t)
		fmt.Fprintf(h, "%s|%s|%v|%s|%v|%v|%v|%d|%s|%v|%s;", t.QName(), t.Kind, t.Tenant, t.TenantColumn,
			t.TenantDefaultGUC, t.RLSEnabled, t.RLSForced, t.OwnerOID, t.ViewDef, t.SecurityInvoker, strings.Join(t.Columns, ","))
		for _, p := range t.Policies {
			fmt.Fprintf(h, "%s|%s|%v|%v|%s|%s;", p.Name, p.Cmd, p.Permissive, p.Roles, p.Using, p.Check)
		}
	}
	sort.Slice(roles, func(i, j int) bool { return roles[i].OID < roles[j].OID })
	for _, r := range roles {
		c.Roles[r.OID] = r
		c.rolesByName[r.Name] = r
		fmt.Fprintf(h, "%d|%s|%v|%v|%v|%v;", r.OID, r.Name, r.Super, r.BypassRLS, r.Inherit, r.MemberOf)
	}
	c.fingerprint = h.Sum64()
	return c
}

// Fingerprint changes whenever anything the analysis depends on changes.
func (c *Catalog) Fingerprint() uint64 { return c.fingerprint }

// RoleByName returns the role called name, or nil.
func (c *Catalog) RoleByName(name string) *Role { return c.rolesByName[name] }

// TenantTables returns the tenant tables sorted by name.
func (c *Catalog) TenantTables() []*Table {
	var out []*Table
	for _, t := range c.Tables {
		if t.Tenant {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].QName() < out[j].QName() })
	return out
}

// lookup resolves a relation name as written in SQL. An unqualified name
// prefers schema public; otherwise, among same-named relations in other
// schemas, a tenant table wins so that ambiguity never hides one.
func (c *Catalog) lookup(schema, name string) *Table {
	if schema != "" {
		return c.Tables[schema+"."+name]
	}
	cands := c.byName[name]
	var pick *Table
	for _, t := range cands {
		if t.Schema == "public" {
			return t
		}
		if pick == nil || (t.Tenant && !pick.Tenant) {
			pick = t
		}
	}
	return pick
}

// hasPrivsOf reports whether role r holds the privileges of role target
// (itself, or through inherited membership), as Postgres' ownership check does.
func (c *Catalog) hasPrivsOf(r *Role, target uint32) bool {
	if r == nil {
		return false
	}
	if r.OID == target || r.Super {
		return true
	}
	seen := map[uint32]bool{r.OID: true}
	stack := []*Role{r}
	for len(stack) > 0 {
		cur := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if !cur.Inherit {
			continue
		}
		for _, m := range cur.MemberOf {
			if m == target {
				return true
			}
			if !seen[m] {
				seen[m] = true
				if mr := c.Roles[m]; mr != nil {
					stack = append(stack, mr)
				}
			}
		}
	}
	return false
}

// BypassesRLS says why RLS does not apply to role r on table t, or "".
func (c *Catalog) BypassesRLS(t *Table, r *Role) string {
	switch {
	case !t.RLSEnabled:
		return "rls_disabled"
	case r == nil:
		return "unknown_role"
	case r.Super:
		return "superuser"
	case r.BypassRLS:
		return "bypassrls"
	case !t.RLSForced && c.hasPrivsOf(r, t.OwnerOID):
		return "owner"
	}
	return ""
}

// RLSProtects reports whether row-level security restricts role r to one
// tenant when it runs cmd (SELECT, INSERT, UPDATE, DELETE) on t.
func (c *Catalog) RLSProtects(t *Table, r *Role, cmd string) bool {
	if c.BypassesRLS(t, r) != "" {
		return false
	}
	var permissive, all int
	scopedPermissive := 0
	for _, p := range t.Policies {
		if !p.appliesTo(cmd) || !c.policyAppliesToRole(p, r) {
			continue
		}
		all++
		ok := p.Scopes && !p.AlwaysTrue
		if !p.Permissive {
			if ok {
				return true
			}
			continue
		}
		permissive++
		if ok {
			scopedPermissive++
		}
	}
	if permissive == 0 {
		// No permissive policy applies: default deny, no row is visible.
		return true
	}
	return scopedPermissive == permissive
}

func (c *Catalog) policyAppliesToRole(p Policy, r *Role) bool {
	for _, name := range p.Roles {
		if name == "public" {
			return true
		}
		if pr := c.rolesByName[name]; pr != nil && c.hasPrivsOf(r, pr.OID) {
			return true
		}
	}
	return false
}

// rlsProfile is a key that is equal for two roles exactly when RLS
// protects the same tenant tables for them.
func (c *Catalog) rlsProfile(r *Role) string {
	var b strings.Builder
	for _, t := range c.TenantTables() {
		if !t.RLSEnabled {
			continue
		}
		for _, cmd := range [...]string{"SELECT", "INSERT", "UPDATE", "DELETE"} {
			if c.RLSProtects(t, r, cmd) {
				b.WriteString(t.QName())
				b.WriteByte(cmd[0])
				b.WriteByte(',')
			}
		}
	}
	return b.String()
}

const catalogTablesSQL = `
SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relowner, pg_get_userbyid(c.relowner),
       c.relrowsecurity, c.relforcerowsecurity,
       CASE WHEN c.relkind = 'v' THEN pg_get_viewdef(c.oid, true) ELSE '' END,
       coalesce(c.reloptions, '{}')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'`

const catalogColumnsSQL = `
SELECT a.attrelid, a.attname, coalesce(pg_get_expr(d.adbin, d.adrelid), '')
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
ORDER BY a.attrelid, a.attnum`

const catalogPoliciesSQL = `
SELECT schemaname::text, tablename::text, policyname::text, permissive, roles::text[], cmd,
       coalesce(qual, ''), coalesce(with_check, '')
FROM pg_policies ORDER BY 1, 2, 3`

const catalogViewDepsSQL = `
SELECT DISTINCT r.ev_class, d.refobjid
FROM pg_rewrite r
JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
JOIN pg_class v ON v.oid = r.ev_class
WHERE v.relkind IN ('v', 'm') AND d.refobjid <> r.ev_class`

const catalogRolesSQL = `
SELECT r.oid, r.rolname, r.rolsuper, r.rolbypassrls, r.rolinherit,
       coalesce(array(SELECT m.roleid FROM pg_auth_members m WHERE m.member = r.oid), '{}')
FROM pg_roles r`

// LoadCatalog reads the model of the connected database.
func LoadCatalog(ctx context.Context, conn *pgx.Conn, cfg Config) (*Catalog, error) {
	var dbname string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&dbname); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	byOID := map[uint32]*Table{}
	rows, err := conn.Query(ctx, catalogTablesSQL)
	if err != nil {
		return nil, fmt.Errorf("catalog tables: %w", err)
	}
	for rows.Next() {
		var (
			oid, owner uint32
			kind       string
			opts       []string
			t          Table
		)
		if err := rows.Scan(&oid, &t.Schema, &t.Name, &kind, &owner, &t.Owner, &t.RLSEnabled, &t.RLSForced, &t.ViewDef, &opts); err != nil {
			rows.Close()
			return nil, fmt.Errorf("catalog tables: %w", err)
		}
		t.OwnerOID = owner
		t.Kind = map[string]string{"r": "table", "p": "table", "v": "view", "m": "matview", "f": "foreign"}[kind]
		for _, o := range opts {
			k, v, _ := strings.Cut(o, "=")
			if k == "security_invoker" {
				switch strings.ToLower(v) {
				case "true", "on", "yes", "1":
					t.SecurityInvoker = true
				}
			}
		}
		tt := t
		byOID[oid] = &tt
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog tables: %w", err)
	}

	defaults := map[*Table]map[string]string{}
	rows, err = conn.Query(ctx, catalogColumnsSQL)
	if err != nil {
		return nil, fmt.Errorf("catalog columns: %w", err)
	}
	for rows.Next() {
		var (
			oid       uint32
			name, def string
		)
		if err := rows.Scan(&oid, &name, &def); err != nil {
			rows.Close()
			return nil, fmt.Errorf("catalog columns: %w", err)
		}
		if t := byOID[oid]; t != nil {
			t.Columns = append(t.Columns, name)
			if def != "" {
				if defaults[t] == nil {
					defaults[t] = map[string]string{}
				}
				defaults[t][name] = def
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog columns: %w", err)
	}

	byQName := map[string]*Table{}
	for _, t := range byOID {
		byQName[t.QName()] = t
	}
	rows, err = conn.Query(ctx, catalogPoliciesSQL)
	if err != nil {
		return nil, fmt.Errorf("catalog policies: %w", err)
	}
	for rows.Next() {
		var (
			schema, table, perm string
			p                   Policy
		)
		if err := rows.Scan(&schema, &table, &p.Name, &perm, &p.Roles, &p.Cmd, &p.Using, &p.Check); err != nil {
			rows.Close()
			return nil, fmt.Errorf("catalog policies: %w", err)
		}
		p.Permissive = perm == "PERMISSIVE"
		if t := byQName[schema+"."+table]; t != nil {
			t.Policies = append(t.Policies, p)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog policies: %w", err)
	}

	deps := map[uint32][]uint32{}
	rows, err = conn.Query(ctx, catalogViewDepsSQL)
	if err != nil {
		return nil, fmt.Errorf("catalog view dependencies: %w", err)
	}
	for rows.Next() {
		var v, ref uint32
		if err := rows.Scan(&v, &ref); err != nil {
			rows.Close()
			return nil, fmt.Errorf("catalog view dependencies: %w", err)
		}
		deps[v] = append(deps[v], ref)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog view dependencies: %w", err)
	}

	var roles []*Role
	rows, err = conn.Query(ctx, catalogRolesSQL)
	if err != nil {
		return nil, fmt.Errorf("catalog roles: %w", err)
	}
	for rows.Next() {
		var r Role
		if err := rows.Scan(&r.OID, &r.Name, &r.Super, &r.BypassRLS, &r.Inherit, &r.MemberOf); err != nil {
			rows.Close()
			return nil, fmt.Errorf("catalog roles: %w", err)
		}
		roles = append(roles, &r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catalog roles: %w", err)
	}

	var tables []*Table
	for oid, t := range byOID {
		if t.Kind == "view" || t.Kind == "matview" {
			t.BaseTables = resolveBase(oid, byOID, deps)
		}
		tables = append(tables, t)
	}
	markTenantTables(tables, cfg, defaults)
	for _, t := range tables {
		for i := range t.Policies {
			analyzePolicy(&t.Policies[i], t, cfg.TenantGUC)
		}
	}
	return NewCatalog(dbname, cfg.TenantColumn, cfg.TenantGUC, tables, roles), nil
}

// resolveBase follows view dependencies down to the tables a view reads.
func resolveBase(view uint32, byOID map[uint32]*Table, deps map[uint32][]uint32) []string {
	seen := map[uint32]bool{view: true}
	set := map[string]bool{}
	stack := []uint32{view}
	for len(stack) > 0 && len(seen) < 10000 {
		cur := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, ref := range deps[cur] {
			if seen[ref] {
				continue
			}
			seen[ref] = true
			t := byOID[ref]
			if t == nil {
				continue
			}
			if t.Kind == "view" {
				stack = append(stack, ref)
			} else {
				set[t.QName()] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// markTenantTables applies the tenant column rule and include/exclude.
func markTenantTables(tables []*Table, cfg Config, defaults map[*Table]map[string]string) {
	var incl, excl []tableRef
	for _, s := range cfg.IncludeTables {
		if r, err := parseTableRef(s, true); err == nil {
			incl = append(incl, r)
		}
	}
	for _, s := range cfg.ExcludeTables {
		if r, err := parseTableRef(s, false); err == nil {
			excl = append(excl, r)
		}
	}
	for _, t := range tables {
		t.colset = map[string]bool{}
		for _, c := range t.Columns {
			t.colset[c] = true
		}
		if t.Kind == "view" {
			continue // a view is resolved to its base tables
		}
		if t.colset[cfg.TenantColumn] {
			t.Tenant, t.TenantColumn = true, cfg.TenantColumn
		}
		for _, r := range incl {
			if r.matches(t.Schema, t.Name) {
				t.Tenant = true
				t.TenantColumn = r.column
				if t.TenantColumn == "" {
					t.TenantColumn = cfg.TenantColumn
				}
			}
		}
		for _, r := range excl {
			if r.matches(t.Schema, t.Name) {
				t.Tenant, t.TenantColumn = false, ""
			}
		}
		if t.Tenant {
			if def := defaults[t][t.TenantColumn]; def != "" {
				t.TenantDefaultGUC = exprReadsGUC(def, cfg.TenantGUC)
			}
		}
	}
}
