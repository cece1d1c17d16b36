package pgstat

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// MarshalText makes a Scope read as none, multi or single in JSON.
func (s Scope) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads none, multi or single.
func (s *Scope) UnmarshalText(b []byte) error {
	switch string(b) {
	case "none":
		*s = ScopeNone
	case "multi":
		*s = ScopeMulti
	case "single":
		*s = ScopeSingle
	default:
		return fmt.Errorf("scope %q: want none, multi or single", b)
	}
	return nil
}

// Finding is one statement that is not restricted to one tenant, as run
// by one role in one database.
type Finding struct {
	Database string `json:"database"`
	QueryID  int64  `json:"queryid"`
	UserID   uint32 `json:"userid"`
	Role     string `json:"role"`
	Class    Class  `json:"class"`
	// Tables are the tenant tables left unrestricted, schema.name.
	Tables []string   `json:"tables"`
	Uses   []TableUse `json:"uses"`
	Query  string     `json:"query"`
	// Reason explains an unknown finding.
	Reason string `json:"reason,omitempty"`
	// Calls and TotalExecTimeMs cover the interval since the last pull
	// (everything counted so far on the first pull, and in pg-audit).
	Calls           uint64    `json:"calls"`
	TotalExecTimeMs float64   `json:"total_exec_time_ms"`
	FirstSeen       time.Time `json:"first_seen"`
	LastSeen        time.Time `json:"last_seen"`
	ObservedAt      time.Time `json:"observed_at"`
}

// Lint names of the RLS audit.
const (
	LintRLSDisabled       = "rls_disabled"
	LintNoPolicy          = "rls_no_policy"
	LintPolicyWithoutGUC  = "policy_without_tenant_guc"
	LintPolicyAlwaysTrue  = "policy_always_true"
	LintRLSNotForcedOwner = "rls_not_forced_owner"
)

// Lint is one finding of the RLS audit.
type Lint struct {
	Database string `json:"database"`
	Table    string `json:"table"`
	Lint     string `json:"lint"`
	Policy   string `json:"policy,omitempty"`
	Role     string `json:"role,omitempty"`
	Detail   string `json:"detail"`
	Hint     string `json:"hint"`
}

// DatabaseReport is the result of one pull of one database.
type DatabaseReport struct {
	Database     string    `json:"database"`
	Extension    string    `json:"pg_stat_statements_version"`
	Statements   int       `json:"statements"`
	TenantTables []string  `json:"tenant_tables"`
	Findings     []Finding `json:"findings"`
	Lints        []Lint    `json:"lints"`
}

// Report is the result of a Scan.
type Report struct {
	Version   int              `json:"version"`
	Databases []DatabaseReport `json:"databases"`
}

// ReportVersion is the version of the JSON report layout.
const ReportVersion = 1

// Clean reports whether the scan found nothing.
func (r *Report) Clean() bool {
	for _, d := range r.Databases {
		if len(d.Findings) > 0 || len(d.Lints) > 0 {
			return false
		}
	}
	return true
}

// Counts returns the number of findings per class and of lints.
func (r *Report) Counts() (byClass map[Class]int, lints int) {
	byClass = map[Class]int{}
	for _, d := range r.Databases {
		for _, f := range d.Findings {
			byClass[f.Class]++
		}
		lints += len(d.Lints)
	}
	return byClass, lints
}

// WriteJSON writes the report as documented in docs/pg-audit.md.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func fixHint(class Class, table string) string {
	switch class {
	case ClassMultiTenant:
		return "the statement reads several tenants at once (IN / ANY / OR); check that the list is the caller's tenants, or split it per tenant"
	case ClassUnknown:
		return "the statement could not be analysed; review it by hand"
	}
	return fmt.Sprintf("add \"%s.<tenant column> = $n\" (or = current_setting('<tenant GUC>')) on every path, "+
		"or ENABLE and FORCE ROW LEVEL SECURITY on %s with a policy on the tenant GUC", shortName(table), table)
}

func shortName(t string) string {
	if i := strings.LastIndexByte(t, '.'); i >= 0 {
		return t[i+1:]
	}
	return t
}

// WriteText writes a human-readable report grouped by table.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	for _, d := range r.Databases {
		fmt.Fprintf(&b, "database %s (pg_stat_statements %s): %d statements, %d tenant tables\n",
			d.Database, d.Extension, d.Statements, len(d.TenantTables))
		byTable := map[string][]Finding{}
		for _, f := range d.Findings {
			tables := f.Tables
			if len(tables) == 0 {
				tables = []string{"(statements that could not be analysed)"}
			}
			for _, t := range tables {
				byTable[t] = append(byTable[t], f)
			}
		}
		names := make([]string, 0, len(byTable))
		for t := range byTable {
			names = append(names, t)
		}
		sort.Strings(names)
		for _, t := range names {
			fmt.Fprintf(&b, "\n  table %s\n", t)
			worst := ClassMultiTenant
			for _, f := range byTable[t] {
				fmt.Fprintf(&b, "    %-12s queryid=%d role=%s calls=%d\n      %s\n", f.Class, f.QueryID, f.Role, f.Calls, oneLine(f.Query, 200))
				if f.Reason != "" {
					fmt.Fprintf(&b, "      reason: %s\n", f.Reason)
				}
				if f.Class == ClassUnscoped || (f.Class == ClassUnknown && worst != ClassUnscoped) {
					worst = f.Class
				}
			}
			fmt.Fprintf(&b, "    fix: %s\n", fixHint(worst, t))
		}
		if len(d.Lints) > 0 {
			fmt.Fprintf(&b, "\n  RLS audit\n")
			for _, l := range d.Lints {
				fmt.Fprintf(&b, "    %-26s %s", l.Lint, l.Table)
				if l.Policy != "" {
					fmt.Fprintf(&b, " policy %s", l.Policy)
				}
				if l.Role != "" {
					fmt.Fprintf(&b, " role %s", l.Role)
				}
				fmt.Fprintf(&b, ": %s\n      fix: %s\n", l.Detail, l.Hint)
			}
		}
		b.WriteString("\n")
	}
	counts, lints := r.Counts()
	fmt.Fprintf(&b, "summary: %d unscoped, %d multi_tenant, %d unknown, %d RLS lints\n",
		counts[ClassUnscoped], counts[ClassMultiTenant], counts[ClassUnknown], lints)
	_, err := io.WriteString(w, b.String())
	return err
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

// AuditRLS lints the tenant tables of cat. appRoles are the roles that
// ran the workload; an owner among them bypasses RLS unless it is forced.
func AuditRLS(cat *Catalog, appRoles []*Role) []Lint {
	var out []Lint
	add := func(t *Table, lint, policy, role, detail, hint string) {
		out = append(out, Lint{Database: cat.Database, Table: t.QName(), Lint: lint, Policy: policy, Role: role, Detail: detail, Hint: hint})
	}
	q := func(t *Table) string { return quoteIdent(t.Schema) + "." + quoteIdent(t.Name) }
	for _, t := range cat.TenantTables() {
		if t.Kind != "table" {
			continue
		}
		if !t.RLSEnabled {
			add(t, LintRLSDisabled, "", "", "tenant table without row-level security",
				fmt.Sprintf("ALTER TABLE %s ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY; CREATE POLICY tenant_isolation ON %s USING (%s = current_setting('%s'))",
					q(t), q(t), quoteIdent(t.TenantColumn), cat.TenantGUC))
			continue
		}
		if len(t.Policies) == 0 {
			add(t, LintNoPolicy, "", "", "row-level security is on but no policy exists, so non-owners see no rows",
				fmt.Sprintf("CREATE POLICY tenant_isolation ON %s USING (%s = current_setting('%s'))", q(t), quoteIdent(t.TenantColumn), cat.TenantGUC))
		}
		for _, p := range t.Policies {
			if !p.UsesGUC {
				add(t, LintPolicyWithoutGUC, p.Name, "", fmt.Sprintf("policy does not read %s", cat.TenantGUC),
					fmt.Sprintf("make the policy compare %s to current_setting('%s')", t.TenantColumn, cat.TenantGUC))
			}
			if p.AlwaysTrue {
				add(t, LintPolicyAlwaysTrue, p.Name, "", "policy expression is always true, so it lets every tenant's rows through",
					fmt.Sprintf("DROP POLICY %s ON %s, or replace its expression", quoteIdent(p.Name), q(t)))
			}
		}
		if !t.RLSForced {
			for _, r := range appRoles {
				if r.Super || !cat.hasPrivsOf(r, t.OwnerOID) {
					continue
				}
				add(t, LintRLSNotForcedOwner, "", r.Name,
					fmt.Sprintf("role %s owns the table (owner %s) and RLS is not forced, so its queries bypass RLS", r.Name, t.Owner),
					fmt.Sprintf("ALTER TABLE %s FORCE ROW LEVEL SECURITY, or run the application as a role that does not own the table", q(t)))
			}
		}
	}
	return out
}

func quoteIdent(s string) string {
	if validIdent(s) && strings.ToLower(s) == s && !strings.ContainsRune(s, '$') {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
