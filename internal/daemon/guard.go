package daemon

import (
	"context"
	"sort"
	"strings"
	"sync"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/anomaly/decide"
	"github.com/tenantguard/tenantguard/limiter"
)

// gauges are the exporter's per-tenant guard gauges; *metrics.Metrics is
// one.
type gauges interface {
	SetActiveAnomalies(tenant string, n int)
	SetThrottled(tenant string, on bool)
}

// guardView follows firing alerts (as an alert sink) and live decisions
// (as the decisions trail's observer) per tenant, and passes both on to
// the gauges and the live view as they change: nothing is polled.
type guardView struct {
	gauges gauges // nil when the exporter is off

	mu        sync.Mutex
	firing    map[string]map[string]string // tenant -> fingerprint -> metric
	decisions map[string]limiter.Decision  // KV key -> live throttle, shed or open circuit
}

var (
	_ anomaly.Sink    = (*guardView)(nil)
	_ decide.Observer = (*guardView)(nil)
)

// Send records a firing or resolved alert.
func (g *guardView) Send(_ context.Context, a anomaly.Alert) {
	if a.TenantID == "" {
		return // a Postgres finding: no tenant to show
	}
	g.mu.Lock()
	if g.firing == nil {
		g.firing = map[string]map[string]string{}
	}
	m := g.firing[a.TenantID]
	if a.Status == anomaly.StatusFiring {
		if m == nil {
			m = map[string]string{}
			g.firing[a.TenantID] = m
		}
		m[a.Fingerprint] = a.Metric
	} else {
		delete(m, a.Fingerprint)
		if len(m) == 0 {
			delete(g.firing, a.TenantID)
		}
	}
	n := len(m)
	g.mu.Unlock()
	if g.gauges != nil {
		g.gauges.SetActiveAnomalies(a.TenantID, n)
	}
}

// ObserveDecision follows one revision of the decisions bucket: a verified
// throttle, shed or open circuit is live until its key is cleared,
// deleted or purged. Unverified values are what limiters ignore, so the
// view ignores them too.
func (g *guardView) ObserveDecision(r decide.Record) {
	switch {
	case r.Op != decide.OpPut:
		g.setDecision(r.Key, limiter.Decision{}, false)
	case r.Verified:
		g.setDecision(r.Key, r.Decision, r.Decision.Action != limiter.ActionClear)
	}
}

func (g *guardView) setDecision(key string, d limiter.Decision, live bool) {
	g.mu.Lock()
	if g.decisions == nil {
		g.decisions = map[string]limiter.Decision{}
	}
	tenant := d.TenantID
	if old, ok := g.decisions[key]; ok {
		tenant = old.TenantID
	}
	if live {
		g.decisions[key] = d
	} else {
		delete(g.decisions, key)
	}
	throttled := false
	for _, x := range g.decisions {
		if x.TenantID == tenant && (x.Action == limiter.ActionThrottle || x.Action == limiter.ActionShed) {
			throttled = true
		}
	}
	g.mu.Unlock()
	if g.gauges != nil && tenant != "" {
		g.gauges.SetThrottled(tenant, throttled)
	}
}

// Guard is what the guard knows of one tenant, for the live view.
type Guard struct {
	Throttled bool   // a live throttle or shed
	Alerting  bool   // at least one firing alert
	Status    string // e.g. "THROTTLED 12/s  ALERT usage,cost"; empty when neither
}

// guarded returns every tenant with a live decision or a firing alert.
func (g *guardView) guarded() map[string]Guard {
	g.mu.Lock()
	tenants := map[string]bool{}
	for _, d := range g.decisions {
		tenants[d.TenantID] = true
	}
	for t := range g.firing {
		tenants[t] = true
	}
	g.mu.Unlock()
	out := make(map[string]Guard, len(tenants))
	for t := range tenants {
		out[t] = g.guard(t)
	}
	return out
}

// guard is one tenant's Guard.
func (g *guardView) guard(tenant string) Guard {
	s := g.status(tenant)
	g.mu.Lock()
	defer g.mu.Unlock()
	gd := Guard{Status: s, Alerting: len(g.firing[tenant]) > 0}
	for _, d := range g.decisions {
		if d.TenantID == tenant && (d.Action == limiter.ActionThrottle || d.Action == limiter.ActionShed) {
			gd.Throttled = true
		}
	}
	return gd
}

// status is a tenant's decision and alert status for the live view, e.g.
// "THROTTLED 12/s  ALERT usage,cost".
func (g *guardView) status(tenant string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var dec string
	for _, d := range g.decisions {
		if d.TenantID != tenant {
			continue
		}
		switch d.Action {
		case limiter.ActionThrottle, limiter.ActionShed:
			dec = "THROTTLED " + anomaly.FormatValue(d.RatePerSec) + "/s"
		case limiter.ActionOpenCircuit:
			if dec == "" {
				dec = "CIRCUIT OPEN " + d.Scope
			}
		}
	}
	var metrics []string
	seen := map[string]bool{}
	for _, metric := range g.firing[tenant] {
		if !seen[metric] {
			seen[metric] = true
			metrics = append(metrics, metric)
		}
	}
	alert := ""
	if len(metrics) > 0 {
		sort.Strings(metrics)
		alert = "ALERT " + strings.Join(metrics, ",")
	}
	return strings.TrimSpace(dec + "  " + alert)
}
