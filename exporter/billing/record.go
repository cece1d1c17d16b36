package billing

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/shopspring/decimal"
)

// Line types only billing_exports holds: one "export" row per recorded
// export, whose tenant_id is empty.
const recExport = "export"

const exportColumns = "export_id, period_from, period_to, scope, generated_at, line_type, tenant_id, kind, " +
	"unit_price, price_version, events, quantity, amount, amount_rounded, currency"

// recorder collects what an export covered, to record it once it is
// written whole. It holds one row per line: tenants × kinds × prices.
type recorder struct {
	id   string
	at   time.Time
	req  Request
	rows []recRow
}

type recRow struct {
	tenant, lineType, kind, versions string
	unit, amount, rounded            decimal.Decimal
	events                           int64
	qty                              float64
}

func newRecorder(req Request, now time.Time) *recorder {
	return &recorder{id: newExportID(now), at: now.Truncate(time.Second), req: req}
}

// add keeps a tenant's usage lines and total; a nil recorder keeps nothing.
func (rc *recorder) add(t *tenantLines) {
	if rc == nil {
		return
	}
	for _, u := range t.lines {
		rc.rows = append(rc.rows, recRow{tenant: t.tenant, lineType: LineUsage, kind: u.kind, versions: u.versions,
			unit: u.unit, amount: u.amount, rounded: u.rounded, events: u.events, qty: u.qty})
	}
	rc.rows = append(rc.rows, recRow{tenant: t.tenant, lineType: LineTenantTotal, amount: t.total, rounded: t.rounded, events: t.events})
}

// record stores the export in billing_exports with one insert (one
// partition, so all or nothing).
func (x *Exporter) record(ctx context.Context, rc *recorder) error {
	batch, err := x.db.Conn().PrepareBatch(ctx, "INSERT INTO "+x.table("billing_exports")+" ("+exportColumns+")")
	if err != nil {
		return fmt.Errorf("record export: %w", err)
	}
	from, to := formatPeriod(rc.req.From), formatPeriod(rc.req.To)
	appendRow := func(r recRow) error {
		return batch.Append(rc.id, from, to, rc.req.Tenant, rc.at, r.lineType, r.tenant, r.kind,
			r.unit, r.versions, r.events, r.qty, r.amount, r.rounded, x.cfg.Currency)
	}
	if err := appendRow(recRow{lineType: recExport, tenant: rc.req.Tenant}); err != nil {
		_ = batch.Abort()
		return fmt.Errorf("record export: %w", err)
	}
	for _, r := range rc.rows {
		if err := appendRow(r); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("record export: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("record export %s: %w", rc.id, err)
	}
	return nil
}

// newExportID returns bx-<UTC time to the microsecond>-<random>: ids sort
// in the order exports were generated.
func newExportID(now time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "bx-" + now.UTC().Format("20060102T150405.000000Z") + "-" + hex.EncodeToString(b[:])
}

// validExportID reports whether s has the shape newExportID gives.
func validExportID(s string) bool {
	if len(s) != len("bx-20060102T150405.000000Z-0a1b2c3d") || s[:3] != "bx-" {
		return false
	}
	for i := 3; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9') && !(c >= 'a' && c <= 'f') && c != 'T' && c != 'Z' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

func clipID(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
