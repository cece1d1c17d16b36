package pgstat

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Config is the `pgstat` section of the tenantguard config.
type Config struct {
	// DSNs are the Postgres databases to audit, one DSN per database.
	// Default empty. The role needs pg_read_all_stats (or superuser).
	DSNs []string `mapstructure:"dsns"`
	// Interval between two pulls of pg_stat_statements. Default 60s.
	Interval time.Duration `mapstructure:"interval"`
	// TenantColumn marks tenant tables: every table with this column is
	// one. Default "tenant_id".
	TenantColumn string `mapstructure:"tenant_column"`
	// TenantGUC is the setting RLS policies read the current tenant from.
	// Default "app.current_tenant".
	TenantGUC string `mapstructure:"tenant_guc"`
	// IncludeTables adds tenant tables that lack TenantColumn, as
	// "table", "schema.table" or "schema.table:column" (the column that
	// holds the tenant, e.g. "public.tenants:id"). Default empty.
	IncludeTables []string `mapstructure:"include_tables"`
	// ExcludeTables removes tables from the tenant set, as "table" (any
	// schema) or "schema.table". Default empty.
	ExcludeTables []string `mapstructure:"exclude_tables"`
	// MinCalls ignores statements called fewer times in total. Default 1.
	MinCalls uint64 `mapstructure:"min_calls"`
	// StatementRetention is how long a finding (its first and last seen
	// times, and that its unscoped alert was sent) is remembered after
	// pg_stat_statements stopped listing it. Findings it lists now are
	// always kept; one forgotten and seen again starts afresh (new
	// first_seen, a new alert if unscoped). Default 24h.
	StatementRetention time.Duration `mapstructure:"statement_retention"`
	// MaxTrackedStatements bounds the unlisted findings remembered per
	// database; the oldest go first. Default 10000.
	MaxTrackedStatements int `mapstructure:"max_tracked_statements"`
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Interval:     60 * time.Second,
		TenantColumn: "tenant_id",
		TenantGUC:    "app.current_tenant",
		MinCalls:     1,

		StatementRetention:   DefaultStatementRetention,
		MaxTrackedStatements: DefaultMaxTrackedStatements,
	}
}

// Validate reports every bad field, each prefixed with its key path.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("pgstat.%s: "+format, append([]any{field}, args...)...))
	}
	for i, d := range c.DSNs {
		if strings.TrimSpace(d) == "" {
			bad("dsns", "entry %d is empty", i)
		}
	}
	if c.Interval <= 0 {
		bad("interval", "must be > 0, got %s", c.Interval)
	}
	if !validIdent(c.TenantColumn) {
		bad("tenant_column", "must be a column name like tenant_id, got %q", c.TenantColumn)
	}
	if c.TenantGUC == "" || len(c.TenantGUC) > 128 || strings.ContainsAny(c.TenantGUC, " '\"\t\n;") {
		bad("tenant_guc", "must be a setting name like app.current_tenant, got %q", c.TenantGUC)
	}
	for _, t := range c.IncludeTables {
		if _, err := parseTableRef(t, true); err != nil {
			bad("include_tables", "%v", err)
		}
	}
	for _, t := range c.ExcludeTables {
		if _, err := parseTableRef(t, false); err != nil {
			bad("exclude_tables", "%v", err)
		}
	}
	if c.MinCalls < 1 {
		bad("min_calls", "must be >= 1")
	}
	if c.StatementRetention <= 0 {
		bad("statement_retention", "must be > 0")
	}
	if c.MaxTrackedStatements < 1 {
		bad("max_tracked_statements", "must be >= 1")
	}
	return errors.Join(errs...)
}

// tableRef is a parsed include/exclude entry.
type tableRef struct {
	schema, name, column string
}

func (r tableRef) matches(schema, name string) bool {
	return r.name == name && (r.schema == "" || r.schema == schema)
}

func parseTableRef(s string, allowColumn bool) (tableRef, error) {
	var r tableRef
	rest := s
	if i := strings.IndexByte(rest, ':'); i >= 0 {
		if !allowColumn {
			return r, fmt.Errorf("%q: a column is only allowed in include_tables", s)
		}
		r.column = rest[i+1:]
		rest = rest[:i]
		if !validIdent(r.column) {
			return r, fmt.Errorf("%q: bad column %q", s, r.column)
		}
	}
	if i := strings.IndexByte(rest, '.'); i >= 0 {
		r.schema, r.name = rest[:i], rest[i+1:]
		if !validIdent(r.schema) {
			return r, fmt.Errorf("%q: bad schema %q", s, r.schema)
		}
	} else {
		r.name = rest
	}
	if !validIdent(r.name) {
		return r, fmt.Errorf("%q: want table, schema.table or schema.table:column", s)
	}
	return r, nil
}

// validIdent accepts a Postgres identifier as stored in the catalog:
// letters, digits, _ and $, not starting with a digit or $, at most 63 bytes.
func validIdent(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || r >= 0x80:
		case (r >= '0' && r <= '9') || r == '$':
			if i == 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}
