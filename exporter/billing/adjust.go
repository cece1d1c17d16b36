package billing

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/shopspring/decimal"
)

// exportHead is one recorded export of the period.
type exportHead struct {
	id          string
	scope       string // "" for every tenant, else the one tenant
	generatedAt time.Time
}

// prevTenant is what the export chosen for a tenant billed it.
type prevTenant struct {
	lines   []usageLine
	events  int64
	total   decimal.Decimal
	rounded decimal.Decimal
}

// previousExports is what earlier exports of the period billed, per tenant:
// the latest recorded export that covered the tenant (an all-tenants
// export covers every tenant, billed or not), or the one AdjustFrom names.
type previousExports struct {
	all     *exportHead            // latest all-tenants export considered
	scoped  map[string]*exportHead // tenant-scoped exports newer than all
	tenants map[string]*prevTenant // tenants with lines in their chosen export
	pending []string               // sorted keys of tenants
	done    map[string]bool        // tenants whose adjustments are written
}

// head returns the export a tenant adjusts against, or nil.
func (p *previousExports) head(tenant string) *exportHead {
	if h := p.scoped[tenant]; h != nil {
		return h
	}
	return p.all
}

// previous loads what earlier recorded exports of req's period billed, or
// nil when there are none.
func (x *Exporter) previous(ctx context.Context, req Request) (*previousExports, error) {
	from, to := formatPeriod(req.From), formatPeriod(req.To)
	q := "SELECT export_id, scope, period_from, period_to, generated_at FROM " + x.table("billing_exports") + " WHERE line_type = ?"
	args := []any{recExport}
	if req.AdjustFrom != "" {
		q += " AND export_id = ?"
		args = append(args, req.AdjustFrom)
	} else {
		q += " AND period_from = ? AND period_to = ?"
		args = append(args, from, to)
		if req.Tenant != "" {
			q += " AND scope IN ('', ?)"
			args = append(args, req.Tenant)
		}
	}
	rows, err := x.db.Conn().Query(ctx, q+" ORDER BY export_id", args...)
	if err != nil {
		return nil, fmt.Errorf("read billing_exports: %w", err)
	}
	var heads []exportHead
	for rows.Next() {
		var h exportHead
		var pf, pt string
		if err := rows.Scan(&h.id, &h.scope, &pf, &pt, &h.generatedAt); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read billing_exports: %w", err)
		}
		if req.AdjustFrom != "" && (pf != from || pt != to) {
			rows.Close()
			return nil, fmt.Errorf("%w: adjust_from: export %s covers [%s, %s), not [%s, %s)", ErrInvalid, h.id, pf, pt, from, to)
		}
		heads = append(heads, h)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read billing_exports: %w", err)
	}
	if req.AdjustFrom != "" {
		if len(heads) == 0 {
			return nil, fmt.Errorf("%w: adjust_from: no recorded export %s", ErrInvalid, req.AdjustFrom)
		}
		if s := heads[0].scope; s != "" && s != req.Tenant {
			return nil, fmt.Errorf("%w: adjust_from: export %s covers tenant %s only; export that tenant", ErrInvalid, req.AdjustFrom, s)
		}
	}
	if len(heads) == 0 {
		return nil, nil
	}
	p := &previousExports{scoped: map[string]*exportHead{}, tenants: map[string]*prevTenant{}, done: map[string]bool{}}
	// Ids sort in generation order: the last all-tenants export, then any
	// tenant's own exports after it, are the latest for each tenant.
	for i := range heads {
		if heads[i].scope == "" {
			p.all = &heads[i]
			clear(p.scoped)
		} else {
			p.scoped[heads[i].scope] = &heads[i]
		}
	}
	ids := []any{}
	if p.all != nil {
		ids = append(ids, p.all.id)
	}
	for _, h := range p.scoped {
		ids = append(ids, h.id)
	}
	if err := x.loadPrevious(ctx, req, p, ids); err != nil {
		return nil, err
	}
	return p, nil
}

// loadPrevious reads the lines of the chosen exports, keeping each tenant's
// lines from the export chosen for it.
func (x *Exporter) loadPrevious(ctx context.Context, req Request, p *previousExports, ids []any) error {
	q := "SELECT export_id, tenant_id, line_type, kind, unit_price, price_version, events, quantity, amount, amount_rounded FROM " +
		x.table("billing_exports") + " WHERE export_id IN ? AND line_type IN (?, ?)"
	args := []any{clickhouse.GroupSet{Value: ids}, LineUsage, LineTenantTotal}
	if req.Tenant != "" {
		q += " AND tenant_id = ?"
		args = append(args, req.Tenant)
	}
	rows, err := x.db.Conn().Query(ctx, q+" ORDER BY tenant_id, kind, unit_price", args...)
	if err != nil {
		return fmt.Errorf("read billing_exports lines: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id, tenant, lineType string
			u                    usageLine
		)
		if err := rows.Scan(&id, &tenant, &lineType, &u.kind, &u.unit, &u.versions, &u.events, &u.qty, &u.amount, &u.rounded); err != nil {
			return fmt.Errorf("read billing_exports lines: %w", err)
		}
		if finite(u.qty) {
			u.exact = decimal.NewFromFloat(u.qty) // the shortest decimal of the stored float: the exact sum it came from
		}
		if h := p.head(tenant); h == nil || h.id != id {
			continue // an older export of this tenant
		}
		t := p.tenants[tenant]
		if t == nil {
			t = &prevTenant{total: decimal.Zero, rounded: decimal.Zero}
			p.tenants[tenant] = t
			p.pending = append(p.pending, tenant)
		}
		if lineType == LineTenantTotal {
			t.events, t.total, t.rounded = u.events, u.amount, u.rounded
		} else {
			t.lines = append(t.lines, u)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read billing_exports lines: %w", err)
	}
	sort.Strings(p.pending)
	return nil
}

// creditsBefore writes the adjustments of tenants that the earlier export
// billed but this one has no lines for, up to (not including) tenant, or
// all of them when tenant is "".
func (r *billingRun) creditsBefore(tenant string) error {
	p := r.prev
	if p == nil {
		return nil
	}
	for len(p.pending) > 0 && (tenant == "" || p.pending[0] < tenant) {
		t := p.pending[0]
		p.pending = p.pending[1:]
		if p.done[t] {
			continue
		}
		empty := tenantLines{tenant: t, total: decimal.Zero, rounded: decimal.Zero}
		if err := r.adjust(&empty); err != nil {
			return err
		}
	}
	return nil
}

// adjust writes t's adjustment lines against the export chosen for it:
// one per usage line whose events, quantity, amount or rounded amount
// changed, and an adjustment_total when anything did.
func (r *billingRun) adjust(t *tenantLines) error {
	p := r.prev
	if p == nil {
		return nil
	}
	h := p.head(t.tenant)
	if h == nil || p.done[t.tenant] {
		return nil
	}
	p.done[t.tenant] = true
	prev := p.tenants[t.tenant]
	if prev == nil {
		prev = &prevTenant{total: decimal.Zero, rounded: decimal.Zero}
	}
	type pair struct{ cur, prev *usageLine }
	keyOf := func(u *usageLine) string { return u.kind + "\x00" + u.unit.StringFixed(9) }
	pairs := map[string]*pair{}
	var keys []string
	get := func(u *usageLine) *pair {
		k := keyOf(u)
		if pairs[k] == nil {
			pairs[k] = &pair{}
			keys = append(keys, k)
		}
		return pairs[k]
	}
	for i := range t.lines {
		get(&t.lines[i]).cur = &t.lines[i]
	}
	for i := range prev.lines {
		get(&prev.lines[i]).prev = &prev.lines[i]
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := pairs[keys[i]], pairs[keys[j]]
		la, lb := a.cur, b.cur
		if la == nil {
			la = a.prev
		}
		if lb == nil {
			lb = b.prev
		}
		if la.kind != lb.kind {
			return la.kind < lb.kind
		}
		return la.unit.LessThan(lb.unit)
	})
	cfg := r.x.cfg
	zero := usageLine{amount: decimal.Zero, rounded: decimal.Zero}
	base := Line{TenantID: t.tenant, Currency: cfg.Currency, PeriodFrom: r.from, PeriodTo: r.to,
		AdjustsExportID: h.id, AdjustsGeneratedAt: h.generatedAt.UTC().Format(time.RFC3339)}
	written := 0
	for _, k := range keys {
		c, o := pairs[k].cur, pairs[k].prev
		ref := c
		if c == nil {
			c, ref = &zero, o
		}
		if o == nil {
			o = &zero
		}
		if c.events == o.events && c.qty == o.qty && c.amount.Equal(o.amount) && c.rounded.Equal(o.rounded) {
			continue
		}
		l := base
		price := ref.unit.StringFixed(9)
		l.LineType, l.Kind, l.UnitPrice, l.PriceVersion = LineAdjustment, ref.kind, &price, ref.versions
		l.Events = c.events - o.events
		if finite(c.qty) && finite(o.qty) {
			l.setQuantity(c.exact.Sub(o.exact))
		}
		l.Amount = c.amount.Sub(o.amount).StringFixed(9)
		l.AmountRounded = c.rounded.Sub(o.rounded).StringFixed(cfg.MinorUnits)
		if err := r.out.line(&l); err != nil {
			return err
		}
		written++
	}
	diff := t.total.Sub(prev.total)
	if written == 0 && t.events == prev.events && diff.IsZero() && t.rounded.Equal(prev.rounded) {
		return nil
	}
	l := base
	l.LineType, l.Events = LineAdjustmentTotal, t.events-prev.events
	l.Amount, l.AmountRounded = diff.StringFixed(9), t.rounded.Sub(prev.rounded).StringFixed(cfg.MinorUnits)
	if err := r.out.line(&l); err != nil {
		return err
	}
	r.sum.Lines += int64(written) + 1
	r.sum.Adjusted++
	r.sum.Adjustment = r.sum.Adjustment.Add(diff)
	return nil
}
