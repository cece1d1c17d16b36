package correct

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/collector/store"
)

// Store is what the Applier needs from ClickHouse.
type Store interface {
	LookupEvents(ctx context.Context, tenant string, refs []store.EventRef, from, to time.Time) (map[string]store.StoredEvent, error)
	CorrectionsOf(ctx context.Context, tenant string, eventIDs, correctionIDs []string) ([]store.CorrectionRow, error)
	InsertCorrections(ctx context.Context, rows []store.CorrectionRow) error
}

var _ Store = (*store.Store)(nil)

// Config of the Applier.
type Config struct {
	// Lateness is how old an event may be corrected without Force; it is
	// collector.lateness. Default 168h.
	Lateness time.Duration
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config { return Config{Lateness: event.DefaultLateness} }

// Validate names every bad field.
func (c Config) Validate() error {
	if c.Lateness <= 0 {
		return errors.New("collector.lateness: must be > 0")
	}
	return nil
}

// Applier validates corrections against what ClickHouse holds and stores
// the valid ones. It is the one implementation of the rules, used by the
// daemon's Service and by `tenantguard correct --direct`. Apply calls are
// serialized, so two corrections of one event never race inside a process;
// across processes the Service's consumer applies one request at a time.
type Applier struct {
	cfg   Config
	store Store
	now   func() time.Time
	mu    sync.Mutex
}

// NewApplier checks cfg and returns an Applier writing through st.
func NewApplier(cfg Config, st Store) (*Applier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if st == nil {
		return nil, errors.New("correct: nil store")
	}
	return &Applier{cfg: cfg, store: st, now: time.Now}, nil
}

// Outcome is what Apply did: one result per correction, in order, and the
// effects of the applied ones for observers.
type Outcome struct {
	Results []event.CorrectionResult
	Effects []event.CorrectionEffect
}

// Refused counts the refused results.
func (o Outcome) Refused() int {
	n := 0
	for _, r := range o.Results {
		if r.Status == event.CorrectionRefused {
			n++
		}
	}
	return n
}

// eventState is a stored event as its corrections so far left it.
type eventState struct {
	orig     store.StoredEvent
	seq      uint32
	quantity float64
	cost     decimal.Decimal
	voided   bool
	voidedAt time.Time
	voidedBy string
}

// Apply validates cs, all of tenant, in order and stores the valid ones
// with one insert. A correction that breaks a rule is refused and changes
// nothing; the others are applied. It returns an error, with nothing
// stored, only when ClickHouse fails: calling it again is then safe, since
// a correction id that was stored is reported as a duplicate.
func (a *Applier) Apply(ctx context.Context, tenant string, cs []event.Correction) (Outcome, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now().UTC()
	out := Outcome{Results: make([]event.CorrectionResult, len(cs))}
	var (
		refs     []store.EventRef
		eventIDs []string
		corrIDs  []string
		forced   bool
		live     = make([]bool, len(cs))
	)
	for i := range cs {
		c := &cs[i]
		out.Results[i] = event.CorrectionResult{ID: c.ID, EventID: c.EventID, Status: event.CorrectionApplied}
		verr := event.ValidateCorrection(c)
		if verr == nil && c.TenantID != tenant {
			verr = &event.ValidationError{Reason: event.ReasonSubjectMismatch, Field: "tenant_id",
				Detail: fmt.Sprintf("%q differs from the request's tenant %q", c.TenantID, tenant)}
		}
		if verr != nil {
			refuse(&out.Results[i], verr)
			continue
		}
		live[i] = true
		refs = append(refs, store.EventRef{ID: c.EventID, Time: c.EventTime})
		eventIDs = append(eventIDs, c.EventID)
		corrIDs = append(corrIDs, c.ID)
		forced = forced || c.Force
	}
	if len(refs) == 0 {
		return out, nil
	}
	// Events without a time are looked up across the lateness window (and
	// the future skew), or across all time when a correction is forced.
	var from, to time.Time
	if !forced {
		from, to = now.Add(-a.cfg.Lateness), now.Add(event.MaxFuture)
	}
	found, err := a.store.LookupEvents(ctx, tenant, refs, from, to)
	if err != nil {
		return Outcome{}, err
	}
	prior, err := a.store.CorrectionsOf(ctx, tenant, eventIDs, corrIDs)
	if err != nil {
		return Outcome{}, err
	}
	applied := make(map[string]bool, len(prior))
	states := make(map[string]*eventState, len(found))
	for id, e := range found {
		states[id] = &eventState{orig: e, quantity: e.Quantity, cost: e.Cost}
	}
	for _, p := range prior {
		applied[p.CorrectionID] = true
		if st := states[p.EventID]; st != nil {
			st.apply(&p)
		}
	}

	var rows []store.CorrectionRow
	for i := range cs {
		if !live[i] {
			continue
		}
		c, res := &cs[i], &out.Results[i]
		if applied[c.ID] {
			res.Status = event.CorrectionDuplicate
			continue
		}
		st := states[c.EventID]
		row, verr := a.check(c, st, now)
		if verr != nil {
			refuse(res, verr)
			continue
		}
		st.apply(&row)
		applied[c.ID] = true
		rows = append(rows, row)
		out.Effects = append(out.Effects, event.CorrectionEffect{
			TenantID: tenant, Kind: row.Kind, Time: row.Time, Action: row.Action,
			Count: row.DeltaCount, Quantity: row.DeltaQty, Cost: row.DeltaCost.InexactFloat64(),
		})
	}
	if err := a.store.InsertCorrections(ctx, rows); err != nil {
		return Outcome{}, err
	}
	return out, nil
}

// check applies the rules that need the stored event, and builds the row.
func (a *Applier) check(c *event.Correction, st *eventState, now time.Time) (store.CorrectionRow, *event.ValidationError) {
	if st == nil {
		where := fmt.Sprintf("within collector.lateness (%s); set force to search all time", a.cfg.Lateness)
		switch {
		case !c.EventTime.IsZero():
			where = "at " + c.EventTime.UTC().Truncate(time.Second).Format(time.RFC3339)
		case c.Force:
			where = "at any time"
		}
		return store.CorrectionRow{}, &event.ValidationError{Reason: event.ReasonUnknownEvent, Field: "event_id",
			Detail: fmt.Sprintf("no event %q of tenant %s %s", clip(c.EventID), c.TenantID, where)}
	}
	e := &st.orig
	if !c.Force && e.Time.Before(now.Add(-a.cfg.Lateness)) {
		return store.CorrectionRow{}, &event.ValidationError{Reason: event.ReasonTooLate, Field: "event_id",
			Detail: fmt.Sprintf("event %q is from %s, older than collector.lateness (%s): its period may be billed; set force to correct it anyway",
				clip(c.EventID), e.Time.Format(time.RFC3339), a.cfg.Lateness)}
	}
	if st.voided {
		what := "voided twice"
		if c.Action == event.ActionAmend {
			what = "amended"
		}
		return store.CorrectionRow{}, &event.ValidationError{Reason: event.ReasonAlreadyVoided, Field: "event_id",
			Detail: fmt.Sprintf("event %q was voided at %s by %s; a voided event cannot be %s",
				clip(c.EventID), st.voidedAt.Format(time.RFC3339), clip(st.voidedBy), what)}
	}
	row := store.CorrectionRow{
		TenantID: c.TenantID, Kind: e.Kind, Time: e.Time, EventID: e.ID, CorrectionID: c.ID, Seq: st.seq + 1,
		Action: c.Action, UnitPrice: e.UnitPrice, PriceVersion: e.PriceVersion, Plan: e.Plan,
		Reason: c.Reason, By: c.By, Forced: c.Force, CorrectedAt: now,
	}
	switch c.Action {
	case event.ActionVoid:
		row.DeltaCount, row.DeltaQty, row.DeltaCost = -1, -st.quantity, st.cost.Neg()
		if e.Error {
			row.DeltaErrors = -1
		}
	case event.ActionAmend:
		q := *c.Quantity
		if q == st.quantity {
			return store.CorrectionRow{}, &event.ValidationError{Reason: event.ReasonNoChange, Field: "quantity",
				Detail: fmt.Sprintf("event %q already has quantity %s", clip(c.EventID), strconv.FormatFloat(q, 'g', -1, 64))}
		}
		// An amendment is priced at the event's own unit price: the
		// price when it was metered, not today's.
		cost := pricing.Cost(q, e.UnitPrice)
		if !pricing.Fits(cost) {
			return store.CorrectionRow{}, &event.ValidationError{Reason: event.ReasonBadQuantity, Field: "quantity",
				Detail: fmt.Sprintf("quantity %s × unit price %s overflows the cost column's Decimal(18, 9)",
					strconv.FormatFloat(q, 'g', -1, 64), e.UnitPrice.StringFixed(9))}
		}
		row.Quantity, row.DeltaQty, row.DeltaCost = q, q-st.quantity, cost.Sub(st.cost)
	}
	return row, nil
}

// apply folds a stored (or about to be stored) correction into the state.
func (st *eventState) apply(r *store.CorrectionRow) {
	st.seq = max(st.seq, r.Seq)
	st.cost = st.cost.Add(r.DeltaCost)
	switch r.Action {
	case event.ActionVoid:
		st.voided, st.voidedAt, st.voidedBy, st.quantity = true, r.CorrectedAt, r.By, 0
	case event.ActionAmend:
		st.quantity = r.Quantity
	}
}

func refuse(r *event.CorrectionResult, verr *event.ValidationError) {
	r.Status, r.Reason, r.Error = event.CorrectionRefused, verr.Reason, verr.Error()
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
