package pgmeter

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/collector/event"
)

// DefaultSetting is the setting row-level security policies read the
// tenant from, current_setting('app.current_tenant'), as tenantguard
// pg-audit expects by default (pgstat.tenant_guc).
const DefaultSetting = "app.current_tenant"

// ErrNoTenant is returned by InTenant when ctx carries no valid tenant.
var ErrNoTenant = errors.New("pgmeter: no valid tenant in the context")

// Beginner starts a transaction: *pgx.Conn, *pgxpool.Pool and pgx.Tx are.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// InTenant runs fn in a transaction in which app.current_tenant is the
// tenant of ctx (event.IdentityFrom), set with
// set_config('app.current_tenant', $1, true): local to the transaction, so
// a pooled connection never carries one tenant's setting into another's
// work. It commits when fn returns nil and rolls back otherwise. Its own
// BEGIN, set_config and COMMIT are not metered; fn's queries are, when
// they use a context carrying the tenant.
func InTenant(ctx context.Context, db Beginner, fn func(pgx.Tx) error) error {
	return InTenantSetting(ctx, db, DefaultSetting, fn)
}

// InTenantSetting is InTenant with another setting name: a custom setting
// of the form prefix.name (letters, digits, "_").
func InTenantSetting(ctx context.Context, db Beginner, setting string, fn func(pgx.Tx) error) error {
	id, ok := event.IdentityFrom(ctx)
	if !ok || !event.ValidTenantID(id.Tenant) {
		return ErrNoTenant
	}
	if !validSetting(setting) {
		return fmt.Errorf("pgmeter: setting %q must be prefix.name, each [A-Za-z_][A-Za-z0-9_]*", setting)
	}
	own := context.WithValue(ctx, skipKey{}, true)
	return pgx.BeginFunc(own, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(own, "SELECT set_config($1, $2, true)", setting, id.Tenant); err != nil {
			return fmt.Errorf("pgmeter: set %s: %w", setting, err)
		}
		return fn(tx)
	})
}

// validSetting reports whether s is a custom setting name: two
// identifiers joined by one dot.
func validSetting(s string) bool {
	dot := -1
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if dot >= 0 || i == 0 || i == len(s)-1 {
				return false
			}
			dot = i
		case c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'):
		case c >= '0' && c <= '9':
			if i == 0 || i == dot+1 {
				return false
			}
		default:
			return false
		}
	}
	return dot > 0 && len(s) <= 63
}
