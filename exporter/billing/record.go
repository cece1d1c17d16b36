package billing

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/tenantguard/tenantguard/collector/store"
)

// Line types only billing_exports holds: one "export" row per recorded
// export, whose tenant_id is empty.
const recExport = "export"

// recorder collects what an export covered, to record it once it is
// written whole. It holds one row per line: tenants × kinds × prices,
// after the export's own row.
type recorder struct {
	id   string
	rows []store.BillingExportRow
}

func newRecorder(req Request, now time.Time) *recorder {
	id := newExportID(now)
	return &recorder{id: id, rows: []store.BillingExportRow{{ExportID: id, PeriodFrom: formatPeriod(req.From),
		PeriodTo: formatPeriod(req.To), Scope: req.Tenant, GeneratedAt: now.Truncate(time.Second),
		LineType: recExport, TenantID: req.Tenant}}}
}

// add keeps a tenant's usage lines and total; a nil recorder keeps nothing.
func (rc *recorder) add(t *tenantLines) {
	if rc == nil {
		return
	}
	line := func(r store.BillingExportRow) {
		head := rc.rows[0]
		r.ExportID, r.PeriodFrom, r.PeriodTo, r.Scope, r.GeneratedAt = head.ExportID, head.PeriodFrom, head.PeriodTo, head.Scope, head.GeneratedAt
		r.TenantID = t.tenant
		rc.rows = append(rc.rows, r)
	}
	for _, u := range t.lines {
		line(store.BillingExportRow{LineType: LineUsage, Kind: u.kind, PriceVersion: u.versions, UnitPrice: u.unit,
			Amount: u.amount, AmountRounded: u.rounded, Events: u.events, Quantity: u.qty})
	}
	line(store.BillingExportRow{LineType: LineTenantTotal, Amount: t.total, AmountRounded: t.rounded, Events: t.events})
}

// record stores the export in billing_exports with one insert (one
// partition, so all or nothing).
func (x *Exporter) record(ctx context.Context, rc *recorder) error {
	for i := range rc.rows {
		rc.rows[i].Currency = x.cfg.Currency
	}
	if err := x.db.InsertBillingExport(ctx, rc.rows); err != nil {
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
