package metrics

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/collector/event"
)

// OverflowTenant is the `tenant` label value that sums every tenant outside
// the top-K (and events whose tenant id is not a legal one).
const OverflowTenant = "__overflow__"

// maxKindsPerTenant bounds the kinds tracked per tenant; events of further
// kinds count under kind="__other__". Validated events never get there.
const (
	maxKindsPerTenant = 64
	otherKind         = "__other__"
	maxLabelLen       = 128
)

// Metrics is the per-tenant Prometheus collector. Observe is safe for
// concurrent use; so are the setters and scrapes.
type Metrics struct {
	cfg    Config
	layout *histLayout
	reg    prometheus.Registerer
	now    func() time.Time

	// mu guards the tenants map. Observe holds it for reading through the
	// update, so a scrape that forgets a tenant never loses an event.
	mu        sync.RWMutex
	tenants   map[string]*tenant
	invalid   *tenant                             // events with an illegal tenant id; always overflow
	capSource func(tenant string) (float64, bool) // see SetSpendCapSource

	gaugeMu   sync.Mutex
	anomalies map[string]int
	throttled map[string]bool
	owns      func(tenant string) bool // tenants whose gauges are exported; nil: every tenant (see Forget)

	collectMu sync.Mutex // serializes scrapes; guards the fields below
	state     collectState

	closeOnce sync.Once
	descs     descs
}

// counts is what the collector accumulates per tenant.
type counts struct {
	kinds  []kindCount
	errors uint64
	cost   float64
	lat    hist
	// credited and debited are the cost that corrections removed (voids,
	// amendments down) and added (amendments up).
	credited, debited float64
}

type kindCount struct {
	kind        string
	events      uint64
	qty         float64
	corrections uint64
}

func (c *counts) clone() counts {
	d := *c
	d.kinds = append([]kindCount(nil), c.kinds...)
	d.lat = c.lat.clone()
	return d
}

func (c *counts) events() uint64 {
	var n uint64
	for _, k := range c.kinds {
		n += k.events
	}
	return n
}

// tenant is one tenant's state.
type tenant struct {
	id       string
	spendCap float64 // from the cap source when first seen, 0 if none; guarded by Metrics.mu

	mu  sync.Mutex
	cur counts // everything this tenant sent since it was first seen; guarded by mu

	// Owned by the scrape path (Metrics.collectMu).
	member     bool      // has its own series
	fresh      bool      // never counted in an emitted overflow yet
	base       counts    // cur when it became a member; its series show cur - base
	lastEvents uint64    // events at the previous scrape
	lastActive time.Time // scrape time at which new events were last seen
	score      float64   // decayed events per ActivityWindow, for ranking
}

// New builds the collector and registers it on reg.
func New(cfg Config, reg prometheus.Registerer) (*Metrics, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if reg == nil {
		return nil, fmt.Errorf("exporter metrics: nil prometheus.Registerer")
	}
	m := &Metrics{
		cfg:       cfg,
		layout:    newHistLayout(cfg.LatencyBuckets, cfg.NativeHistogramBucketFactor, cfg.NativeHistogramMaxBuckets),
		reg:       reg,
		now:       time.Now,
		tenants:   make(map[string]*tenant),
		anomalies: make(map[string]int),
		throttled: make(map[string]bool),
		descs:     newDescs(),
	}
	m.invalid = m.newTenant(OverflowTenant)
	m.state.init(m.layout)
	if err := reg.Register(m); err != nil {
		return nil, fmt.Errorf("register exporter metrics: %w", err)
	}
	return m, nil
}

// Close unregisters the collector. It is idempotent.
func (m *Metrics) Close() error {
	m.closeOnce.Do(func() { m.reg.Unregister(m) })
	return nil
}

func (m *Metrics) newTenant(id string) *tenant {
	return &tenant{id: id, fresh: true, cur: counts{lat: newHist(m.layout)}}
}

// Observe records one stored event and its cost. It is the collector's
// observer hook, on the per-event hot path: it takes a read lock and the
// tenant's own mutex, and allocates only the first time it sees a tenant
// or one of its kinds.
func (m *Metrics) Observe(e *event.Event, cost float64) {
	if e == nil {
		return
	}
	m.mu.RLock()
	t := m.tenants[e.TenantID]
	if t == nil && !event.ValidTenantID(e.TenantID) {
		t = m.invalid
	}
	if t != nil {
		t.record(m.layout, e, cost)
		m.mu.RUnlock()
		return
	}
	m.mu.RUnlock()

	m.mu.Lock()
	t = m.tenants[e.TenantID]
	if t == nil {
		t = m.trackLocked(e.TenantID)
	}
	t.record(m.layout, e, cost)
	m.mu.Unlock()
}

func (t *tenant) record(l *histLayout, e *event.Event, cost float64) {
	qty := e.Quantity
	if !(qty >= 0) || math.IsInf(qty, 1) { // NaN, negative, +Inf
		qty = 0
	}
	if !(cost >= 0) || math.IsInf(cost, 1) {
		cost = 0
	}
	t.mu.Lock()
	c := &t.cur
	i := c.kindSlot(e.Kind)
	c.kinds[i].events++
	c.kinds[i].qty += qty
	if e.Error {
		c.errors++
	}
	c.cost += cost
	if e.Kind == event.KindAPIRequest {
		c.lat.observe(l, e.LatencyMs/1000)
	}
	t.mu.Unlock()
}

// ObserveCorrection counts one applied correction of a stored event: it is
// exported as tenantguard_tenant_corrections_total{tenant,kind} and, by
// the sign of its cost, tenantguard_tenant_corrected_cost_total{tenant,
// direction="credit"|"debit"}. The event counters are left as they were:
// Prometheus counters never decrease. It is the correction service's
// observer hook.
func (m *Metrics) ObserveCorrection(e *event.CorrectionEffect) {
	if e == nil {
		return
	}
	m.mu.RLock()
	t := m.tenants[e.TenantID]
	if t == nil && !event.ValidTenantID(e.TenantID) {
		t = m.invalid
	}
	if t != nil {
		t.correct(e)
		m.mu.RUnlock()
		return
	}
	m.mu.RUnlock()
	m.mu.Lock()
	t = m.tenants[e.TenantID]
	if t == nil {
		t = m.trackLocked(e.TenantID)
	}
	t.correct(e)
	m.mu.Unlock()
}

// trackLocked starts tracking tenant, with its spend cap; m.mu is held.
func (m *Metrics) trackLocked(id string) *tenant {
	t := m.newTenant(strings.Clone(id))
	if m.capSource != nil {
		if c, ok := m.capSource(t.id); ok && c > 0 && !math.IsInf(c, 0) {
			t.spendCap = c
		}
	}
	m.tenants[t.id] = t
	return t
}

func (t *tenant) correct(e *event.CorrectionEffect) {
	cost := e.Cost
	if math.IsNaN(cost) || math.IsInf(cost, 0) {
		cost = 0
	}
	t.mu.Lock()
	c := &t.cur
	i := c.kindSlot(e.Kind)
	c.kinds[i].corrections++
	if cost < 0 {
		c.credited -= cost
	} else {
		c.debited += cost
	}
	t.mu.Unlock()
}

// kindSlot returns the index of kind's counts, adding them (or finding
// __other__ past the cap) when missing.
func (c *counts) kindSlot(kind string) int {
	for i := range c.kinds {
		if c.kinds[i].kind == kind {
			return i
		}
	}
	return c.addKind(kind)
}

// addKind appends kind (or finds __other__ past the cap) and returns its index.
func (c *counts) addKind(kind string) int {
	if len(c.kinds) >= maxKindsPerTenant-1 || !utf8.ValidString(kind) || len(kind) > maxLabelLen {
		for i := range c.kinds {
			if c.kinds[i].kind == otherKind {
				return i
			}
		}
		kind = otherKind
	} else {
		kind = strings.Clone(kind)
	}
	c.kinds = append(c.kinds, kindCount{kind: kind})
	return len(c.kinds) - 1
}

// SetActiveAnomalies sets how many anomalies are firing for tenant. It is
// exported as tenantguard_tenant_active_anomalies. An illegal tenant id is
// ignored; n <= 0 clears the tenant.
func (m *Metrics) SetActiveAnomalies(tenant string, n int) {
	if !event.ValidTenantID(tenant) {
		return
	}
	m.gaugeMu.Lock()
	defer m.gaugeMu.Unlock()
	if n <= 0 {
		delete(m.anomalies, tenant)
		return
	}
	m.anomalies[strings.Clone(tenant)] = n
}

// SetThrottled records whether a throttle, shed or open-circuit decision is
// in force for tenant. It is exported as tenantguard_tenant_throttled (0/1).
// An illegal tenant id is ignored.
func (m *Metrics) SetThrottled(tenant string, on bool) {
	if !event.ValidTenantID(tenant) {
		return
	}
	m.gaugeMu.Lock()
	defer m.gaugeMu.Unlock()
	if !on {
		delete(m.throttled, tenant)
		return
	}
	m.throttled[strings.Clone(tenant)] = true
}

// SetSpendCapSource sets where tenants' monthly spend caps come from: f is
// called once each time the collector starts tracking a tenant (its first
// event, or its first after it was forgotten for idleness), with the
// collector's lock held, so it must be fast and must not call back into
// Metrics (a price-book lookup). The cap is exported as
// tenantguard_tenant_spend_cap and forgotten with the tenant. Call it
// before the first Observe.
func (m *Metrics) SetSpendCapSource(f func(tenant string) (capacity float64, ok bool)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.capSource = f
}

// Forget makes the collector export the per-tenant gauges (active
// anomalies, throttled, spend cap) only for the tenants owns accepts,
// until the next call, and forgets the active-anomaly counts of the
// others. With one owner replica per tenant, each replica calls it with
// its owned set whenever that changes, so a sum of a gauge over replicas
// counts each tenant once. Counters stay: each replica's count what it
// observed, and their sum is the total. Throttles are kept, not exported:
// every replica follows every decision, and the owner exports the
// tenant's. owns is called during scrapes with the collector's locks
// held: it must be fast and must not call back into Metrics. nil owns
// every tenant again.
func (m *Metrics) Forget(owns func(tenant string) bool) {
	m.gaugeMu.Lock()
	defer m.gaugeMu.Unlock()
	m.owns = owns
	if owns == nil {
		return
	}
	for id := range m.anomalies {
		if !owns(id) {
			delete(m.anomalies, id)
		}
	}
}

func okLabel(s string) bool { return s != "" && len(s) <= maxLabelLen && utf8.ValidString(s) }
