package store

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
)

// UsageTenants returns the tenants that have usage_1m rows with minute in
// [from, to), in order. A replica that takes some tenants over lists them
// here, keeps the ones it owns, and reads only theirs (RollupsOf,
// HourlyCountsOf).
func (s *Store) UsageTenants(ctx context.Context, from, to time.Time) ([]string, error) {
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT tenant_id FROM "+s.Table("usage_1m")+
		" WHERE minute >= ? AND minute < ? ORDER BY tenant_id", from.UTC(), to.UTC())
	if err != nil {
		return nil, fmt.Errorf("list usage tenants: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var tenant string
		if err := rows.Scan(&tenant); err != nil {
			return nil, fmt.Errorf("scan usage tenants: %w", err)
		}
		out = append(out, tenant)
	}
	return out, rows.Err()
}

// RollupsOf is Rollups of the given tenants only: ClickHouse reads and
// sends only their rows. No tenants, no rows.
func (s *Store) RollupsOf(ctx context.Context, tenants []string, from, to time.Time, fn func(UsageRow) error) error {
	if tenants == nil {
		tenants = []string{}
	}
	return s.rollups(ctx, tenants, from, to, fn)
}

// HourlyCountsOf is HourlyCounts of the given tenants only. No tenants, no
// rows.
func (s *Store) HourlyCountsOf(ctx context.Context, tenants []string, from, to time.Time, fn func(HourlyCount) error) error {
	if tenants == nil {
		tenants = []string{}
	}
	return s.hourlyCounts(ctx, tenants, from, to, fn)
}

// onlyTenants prepares a read of only some tenants: nil only reads every
// tenant (ctx as it is, no filter); an empty one reads nothing (a nil
// context); else the tenants travel as the external table only_tenants,
// which ClickHouse ships to every shard with the query, and filter is the
// condition to add to its WHERE. The sort key starts with tenant_id, so a
// shard reads only the granules of those tenants.
func onlyTenants(ctx context.Context, only []string) (context.Context, string, error) {
	switch {
	case only == nil:
		return ctx, "", nil
	case len(only) == 0:
		return nil, "", nil
	}
	tbl, err := ext.NewTable("only_tenants", ext.Column("tenant_id", "String"))
	if err != nil {
		return nil, "", fmt.Errorf("tenant filter: %w", err)
	}
	for _, tenant := range only {
		if err := tbl.Append(tenant); err != nil {
			return nil, "", fmt.Errorf("tenant filter: %w", err)
		}
	}
	return clickhouse.Context(ctx, clickhouse.WithExternalTable(tbl)), " AND tenant_id IN (SELECT tenant_id FROM only_tenants)", nil
}
