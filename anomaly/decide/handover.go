package decide

import (
	"context"
	"errors"
	"fmt"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/limiter"
)

// Lister lists the live decisions in the bucket that verify and are not
// clears; *limiter.Publisher is one. Handover needs the publisher to be
// one.
type Lister interface {
	List(ctx context.Context, includeExpired bool) ([]limiter.Decision, error)
}

var _ Lister = (*limiter.Publisher)(nil)

// Handed is what one Handover did.
type Handed struct {
	Released int // decision keys the engine no longer renews or clears (left live in the bucket)
	Adopted  int // live automatic decisions of newly owned tenants the engine now renews and clears
	// Decisions are the adopted decisions: a caller that knows an
	// episode one names is not open any more hands the engine its
	// resolution (Handle), which clears it.
	Decisions []limiter.Decision
}

// Handover makes the engine the authority for exactly the tenants owns
// accepts: only a tenant's owner renews or clears its automatic
// decisions. Decisions of tenants owns rejects are released: the engine
// forgets them, without clearing them, so they stay live for the new
// owner, and it ignores their alerts from now on. The live automatic
// decisions (sources anomaly and spend_cap) of owned tenants it does not
// hold are adopted from the bucket: renewed as they are, with their rate,
// while their episode is open, and cleared when the detector resolves the
// episode they name (anomaly_id, the fingerprint the detector continues
// it under). Manual decisions are never the engine's. owns is kept until
// the next Handover; it must be safe for concurrent use.
func (e *Engine) Handover(ctx context.Context, owns func(tenant string) bool) (Handed, error) {
	var h Handed
	if owns == nil {
		return h, errors.New("decide: handover: nil owns")
	}
	lister, ok := e.deps.Publisher.(Lister)
	if !ok {
		return h, errors.New("decide: handover: the publisher cannot list decisions")
	}
	e.opMu.Lock()
	defer e.opMu.Unlock()

	e.mu.Lock()
	e.owns = owns
	for key := range e.active {
		if tenant, _, err := limiter.ParseKey(key); err == nil && !owns(tenant) {
			delete(e.active, key)
			h.Released++
		}
	}
	e.activeN.Store(int64(len(e.active)))
	e.mu.Unlock()
	e.lateMu.Lock()
	for fp, a := range e.late {
		if !owns(a.TenantID) {
			delete(e.late, fp)
		}
	}
	e.lateMu.Unlock()

	kctx, cancel := context.WithTimeout(ctx, 10*e.cfg.KVTimeout)
	live, err := lister.List(kctx, false)
	cancel()
	if err != nil {
		return h, fmt.Errorf("decide: handover: %w", err)
	}
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, d := range live {
		if d.Source == limiter.SourceManual || d.AnomalyID == "" || !d.Live(now) || !owns(d.TenantID) {
			continue
		}
		key, err := d.Key()
		if err != nil || e.active[key] != nil {
			continue // held already: the engine's own decision
		}
		d.KeyID, d.Sig = "", ""
		e.active[key] = &condition{
			alerts:  map[string]anomaly.Alert{},
			adopted: map[string]limiter.Decision{d.AnomalyID: d},
			current: d,
		}
		h.Adopted++
		h.Decisions = append(h.Decisions, d)
	}
	e.activeN.Store(int64(len(e.active)))
	return h, nil
}

// owned reports whether the engine acts on tenant's alerts.
func (e *Engine) owned(tenant string) bool {
	e.mu.Lock()
	owns := e.owns
	e.mu.Unlock()
	return owns == nil || owns(tenant)
}

// holds reports whether c holds the episode of fingerprint fp; c may be
// nil.
func (c *condition) holds(fp string) bool {
	if c == nil {
		return false
	}
	if _, ok := c.alerts[fp]; ok {
		return true
	}
	_, ok := c.adopted[fp]
	return ok
}
