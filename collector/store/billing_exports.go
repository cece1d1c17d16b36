package store

import (
	"context"
	"time"

	"github.com/shopspring/decimal"
)

// BillingExportRow is one row of billing_exports: a line of a recorded
// billing export (an "export" row, then its usage and tenant_total
// lines).
type BillingExportRow struct {
	ExportID      string
	PeriodFrom    string
	PeriodTo      string
	Scope         string // the tenant of a one-tenant export, else ""
	GeneratedAt   time.Time
	LineType      string
	TenantID      string
	Kind          string
	UnitPrice     decimal.Decimal
	PriceVersion  string
	Events        int64
	Quantity      float64
	Amount        decimal.Decimal
	AmountRounded decimal.Decimal
	Currency      string
}

// BillingExportColumns is the column list InsertBillingExport names.
const BillingExportColumns = "export_id, period_from, period_to, scope, generated_at, line_type, tenant_id, kind, " +
	"unit_price, price_version, events, quantity, amount, amount_rounded, currency"

// InsertBillingExport writes the rows of one export with one insert. They
// share a generated_at, so they land in one partition and the insert
// stores all of them or none; in a cluster they share an export_id, the
// sharding key, so they land on one shard too.
func (s *Store) InsertBillingExport(ctx context.Context, rows []BillingExportRow) error {
	return insertRows(ctx, s, "billing_exports", BillingExportColumns, rows, func(r *BillingExportRow) []any {
		return []any{r.ExportID, r.PeriodFrom, r.PeriodTo, r.Scope, r.GeneratedAt, r.LineType, r.TenantID, r.Kind,
			r.UnitPrice, r.PriceVersion, r.Events, r.Quantity, r.Amount, r.AmountRounded, r.Currency}
	})
}
