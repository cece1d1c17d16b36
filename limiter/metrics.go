package limiter

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const overflowLabel = "__overflow__"

// tenantStats counts one tenant's outcomes. It is padded to a cache line
// so that two goroutines counting different tenants do not false-share.
type tenantStats struct {
	allowed, throttled, circuitRejected atomic.Uint64
	shadowRejected                      atomic.Uint64 // requests a shadow decision would have rejected
	creditsSpent                        atomic.Uint64 // burst credits spent on requests the limit rejected
	label                               string
	_                                   [8]byte
}

// statSums are a label's counters summed over its tenants.
type statSums struct {
	allowed, throttled, circuitRejected, shadowRejected, creditsSpent uint64
}

// statsRegistry hands out one tenantStats per tenant; the first max
// tenants get their own label, the rest are labelled __overflow__.
type statsRegistry struct {
	mu      sync.Mutex
	max     int
	labeled int
	m       map[string]*tenantStats
}

func newStatsRegistry(max int) *statsRegistry {
	return &statsRegistry{max: max, m: map[string]*tenantStats{}}
}

func (r *statsRegistry) get(tenant string) *tenantStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.m[tenant]; s != nil {
		return s
	}
	s := &tenantStats{label: overflowLabel}
	if tenant == overflowLabel {
		r.m[tenant] = s
		return s
	}
	if r.labeled < r.max {
		s.label = tenant
		r.labeled++
	}
	r.m[tenant] = s
	return s
}

// sums adds up the counters by label.
func (r *statsRegistry) sums() map[string]statSums {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]statSums, r.labeled+1)
	for _, s := range r.m {
		v := out[s.label]
		v.allowed += s.allowed.Load()
		v.throttled += s.throttled.Load()
		v.circuitRejected += s.circuitRejected.Load()
		v.shadowRejected += s.shadowRejected.Load()
		v.creditsSpent += s.creditsSpent.Load()
		out[s.label] = v
	}
	return out
}

// metrics is the SDK's Prometheus collector. Counters live in plain atomics
// on the hot path and become const metrics at scrape time.
type metrics struct {
	l                                        *Limiter
	allowed, throttled, circuitRejected      *prometheus.Desc
	instances, decisions, lastRevision       *prometheus.Desc
	watchRestarts, updates, breakerOpened    *prometheus.Desc
	rejected, shadowRejected                 *prometheus.Desc
	creditsSpent, creditsRemaining           *prometheus.Desc
	nWatchRestarts, nUpdates, nBreakerOpened atomic.Uint64
}

func newMetrics(l *Limiter, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		l: l,
		allowed: prometheus.NewDesc("tenantguard_limiter_allowed_total",
			"Requests a limit applied to and allowed, by tenant (top tenants, others under __overflow__). Tenants with no limit at all are not counted.",
			[]string{"tenant"}, nil),
		throttled: prometheus.NewDesc("tenantguard_limiter_throttled_total",
			"Requests rejected by a throttle or shed decision or a default limit, by tenant.",
			[]string{"tenant"}, nil),
		circuitRejected: prometheus.NewDesc("tenantguard_limiter_circuit_rejected_total",
			"Calls rejected by an open circuit, by tenant.", []string{"tenant"}, nil),
		instances: prometheus.NewDesc("tenantguard_limiter_instances",
			"Live limiter instances of this group that global rates are split by.", nil, nil),
		decisions: prometheus.NewDesc("tenantguard_limiter_decisions",
			"Live decisions held by this instance.", nil, nil),
		lastRevision: prometheus.NewDesc("tenantguard_limiter_decisions_revision",
			"Last KV revision of tenantguard_decisions seen.", nil, nil),
		watchRestarts: prometheus.NewDesc("tenantguard_limiter_watch_restarts_total",
			"Times the KV watch was re-created (reconnect or failure).", nil, nil),
		updates: prometheus.NewDesc("tenantguard_limiter_decision_updates_total",
			"KV decision updates applied.", nil, nil),
		breakerOpened: prometheus.NewDesc("tenantguard_limiter_breaker_opened_total",
			"Circuit breakers opened locally by the error ratio.", nil, nil),
		rejected: prometheus.NewDesc("tenantguard_limiter_decisions_rejected_total",
			"Decisions from the KV bucket ignored, by reason: malformed, invalid, unsigned (also a delete of a live decision), unknown_key, bad_signature, expiry_too_far, expired.",
			[]string{"reason"}, nil),
		shadowRejected: prometheus.NewDesc("tenantguard_limiter_shadow_rejected_total",
			"Requests a shadow decision would have rejected (and that were allowed), by tenant (top tenants, others under __overflow__).",
			[]string{"tenant"}, nil),
		creditsSpent: prometheus.NewDesc("tenantguard_limiter_burst_credits_spent_total",
			"Burst credits spent on requests the tenant's limit rejected (and that were allowed), by tenant (top tenants, others under __overflow__).",
			[]string{"tenant"}, nil),
		creditsRemaining: prometheus.NewDesc("tenantguard_limiter_burst_credits_remaining",
			"Burst credits banked on this instance now, by tenant (top tenants, others under __overflow__).",
			[]string{"tenant"}, nil),
	}
	if err := reg.Register(m); err != nil {
		return nil, err
	}
	if err := reg.Register(newBreakerStates(l)); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.allowed, m.throttled, m.circuitRejected, m.instances,
		m.decisions, m.lastRevision, m.watchRestarts, m.updates, m.breakerOpened, m.rejected, m.shadowRejected, m.creditsSpent, m.creditsRemaining} {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for label, v := range m.l.stats.sums() {
		ch <- prometheus.MustNewConstMetric(m.allowed, prometheus.CounterValue, float64(v.allowed), label)
		ch <- prometheus.MustNewConstMetric(m.throttled, prometheus.CounterValue, float64(v.throttled), label)
		ch <- prometheus.MustNewConstMetric(m.circuitRejected, prometheus.CounterValue, float64(v.circuitRejected), label)
		ch <- prometheus.MustNewConstMetric(m.shadowRejected, prometheus.CounterValue, float64(v.shadowRejected), label)
		ch <- prometheus.MustNewConstMetric(m.creditsSpent, prometheus.CounterValue, float64(v.creditsSpent), label)
	}
	for label, v := range m.l.creditSums(time.Now()) {
		ch <- prometheus.MustNewConstMetric(m.creditsRemaining, prometheus.GaugeValue, v, label)
	}
	m.l.mu.Lock()
	n, rev := len(m.l.decisions), m.l.lastRev
	m.l.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(m.instances, prometheus.GaugeValue, float64(m.l.Instances()))
	ch <- prometheus.MustNewConstMetric(m.decisions, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(m.lastRevision, prometheus.GaugeValue, float64(rev))
	ch <- prometheus.MustNewConstMetric(m.watchRestarts, prometheus.CounterValue, float64(m.nWatchRestarts.Load()))
	ch <- prometheus.MustNewConstMetric(m.updates, prometheus.CounterValue, float64(m.nUpdates.Load()))
	ch <- prometheus.MustNewConstMetric(m.breakerOpened, prometheus.CounterValue, float64(m.nBreakerOpened.Load()))
	for _, r := range RejectReasons {
		ch <- prometheus.MustNewConstMetric(m.rejected, prometheus.CounterValue, float64(m.l.Rejected(r)), r)
	}
}

// inc helpers tolerate a nil *metrics (no Registerer).
func (m *metrics) incWatchRestarts() {
	if m != nil {
		m.nWatchRestarts.Add(1)
	}
}

func (m *metrics) addUpdates(n int) {
	if m != nil {
		m.nUpdates.Add(uint64(n))
	}
}

func (m *metrics) incBreakerOpened() {
	if m != nil {
		m.nBreakerOpened.Add(1)
	}
}
