package limiter

import (
	"maps"
	"math"
	"strings"
	"time"
)

// Apply puts d into force locally, as if it had arrived from the KV bucket.
// A clear decision removes the scope's decision. It is for local-only
// limiters and tests; with a NATS connection, publish instead.
func (l *Limiter) Apply(d Decision) error {
	if err := d.Validate(); err != nil {
		return err
	}
	key, err := d.Key()
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.applyLocked(map[string]*Decision{key: &d}, time.Now())
	return nil
}

// applyLocked merges changes (key -> decision, nil to delete) into the
// local state and publishes a new snapshot in which only the touched
// tenants' states are rebuilt. l.mu must be held.
func (l *Limiter) applyLocked(changes map[string]*Decision, now time.Time) {
	touched := map[string]struct{}{}
	keys := make([]string, 0, len(changes))
	for key, d := range changes {
		keys = append(keys, key)
		if old, ok := l.decisions[key]; ok {
			delete(l.decisions, key)
			if m := l.byTenant[old.TenantID]; m != nil {
				delete(m, old.Scope)
				if len(m) == 0 {
					delete(l.byTenant, old.TenantID)
				}
			}
			touched[old.TenantID] = struct{}{}
		}
		if d == nil || d.Action == ActionClear || !d.Live(now) {
			if d != nil {
				touched[d.TenantID] = struct{}{}
			}
			continue
		}
		l.decisions[key] = *d
		m := l.byTenant[d.TenantID]
		if m == nil {
			m = map[string]Decision{}
			l.byTenant[d.TenantID] = m
		}
		m[d.Scope] = *d
		touched[d.TenantID] = struct{}{}
	}
	l.rebuildLocked(touched)
	if l.onApply != nil {
		l.onApply(keys)
	}
}

// expireLocked drops every decision that has expired by now.
func (l *Limiter) expireLocked(now time.Time) {
	changes := map[string]*Decision{}
	for key, d := range l.decisions {
		if !d.Live(now) {
			changes[key] = nil
		}
	}
	if len(changes) > 0 {
		l.applyLocked(changes, now)
	}
}

// nextExpiryLocked returns the earliest expiry of a live decision, or the
// zero time.
func (l *Limiter) nextExpiryLocked() time.Time {
	var next time.Time
	for _, d := range l.decisions {
		if next.IsZero() || d.ExpiresAt.Before(next) {
			next = d.ExpiresAt
		}
	}
	return next
}

func (l *Limiter) rebuildLocked(touched map[string]struct{}) {
	if len(touched) == 0 {
		return
	}
	old := l.snap.Load()
	tenants := maps.Clone(old.tenants)
	for tenant := range touched {
		ts := l.buildTenant(tenant, l.byTenant[tenant], old.tenants[tenant])
		if ts == nil {
			delete(tenants, tenant)
		} else {
			tenants[tenant] = ts
		}
	}
	l.snap.Store(&snapshot{tenants: tenants})
	select {
	case l.expiryC <- struct{}{}:
	default:
	}
}

// buildTenant builds a tenant's state from its decisions, reusing the
// token buckets of prev so that live changes keep their tokens and go
// through SetLimit/SetBurst.
func (l *Limiter) buildTenant(tenant string, decs map[string]Decision, prev *tenantState) *tenantState {
	if len(decs) == 0 {
		return nil
	}
	ts := &tenantState{stats: l.stats.get(tenant)}
	bank := l.creditsFor(tenant)
	for scope, d := range decs {
		exp := d.ExpiresAt.UnixNano()
		if d.Action == ActionOpenCircuit {
			circuits := &ts.circuits
			if d.Shadow() {
				circuits = &ts.shadowCircs
			}
			if *circuits == nil {
				*circuits = map[string]int64{}
			}
			integ := strings.TrimPrefix(scope, ScopeIntegPrefix)
			if scope == ScopeAll {
				integ = ""
			}
			(*circuits)[integ] = exp
			continue
		}
		var reuse *limitState
		switch {
		case scope == ScopeAll:
			if prev != nil && prev.hasAll {
				reuse = &prev.all
			}
		case strings.HasPrefix(scope, ScopeUserPrefix):
			if prev != nil {
				reuse = prev.users[scope[len(ScopeUserPrefix):]]
			}
		case strings.HasPrefix(scope, ScopeRoutePrefix):
			if prev != nil {
				reuse = prev.routes[scope[len(ScopeRoutePrefix):]]
			}
		default:
			if prev != nil {
				reuse = prev.integrations[scope[len(ScopeIntegPrefix):]]
			}
		}
		s := l.stateFor(d, exp, reuse, ts.stats)
		if scope == ScopeAll && !s.shadow {
			s.credits = bank
		}
		switch {
		case scope == ScopeAll:
			ts.all, ts.hasAll = *s, true
		case strings.HasPrefix(scope, ScopeRoutePrefix):
			if ts.routes == nil {
				ts.routes = map[string]*limitState{}
			}
			ts.routes[scope[len(ScopeRoutePrefix):]] = s
		case strings.HasPrefix(scope, ScopeUserPrefix):
			if ts.users == nil {
				ts.users = map[string]*limitState{}
			}
			ts.users[scope[len(ScopeUserPrefix):]] = s
		default:
			if ts.integrations == nil {
				ts.integrations = map[string]*limitState{}
			}
			ts.integrations[scope[len(ScopeIntegPrefix):]] = s
		}
	}
	return ts
}

func (l *Limiter) stateFor(d Decision, exp int64, reuse *limitState, st *tenantStats) *limitState {
	if exp <= 0 {
		exp = math.MaxInt64
	}
	shed := d.Action == ActionShed
	gb := d.EffectiveBurst()
	if reuse == nil || reuse.lim == nil || shed {
		s := l.newState(d.RatePerSec, gb, exp, shed, st)
		s.shadow = d.Shadow()
		return s
	}
	s := &limitState{lim: reuse.lim, expires: exp, globalRate: d.RatePerSec, globalBurst: gb, stats: st, shadow: d.Shadow()}
	if reuse.globalRate != d.RatePerSec || reuse.globalBurst != gb {
		r, b := split(d.RatePerSec, gb, l.localN())
		s.lim.SetLimit(r)
		s.lim.SetBurst(b)
	}
	return s
}
