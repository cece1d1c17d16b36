package limiter

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// breakerStates is the gauge tenantguard_limiter_breakers{state}: how many
// tenant/integration circuits are closed, open or half-open now. A circuit
// forced open by an open_circuit decision counts as open, whether or not
// it has a local breaker. Computed at scrape time; the hot path pays nothing.
type breakerStates struct {
	l    *Limiter
	desc *prometheus.Desc
}

func newBreakerStates(l *Limiter) *breakerStates {
	return &breakerStates{l: l, desc: prometheus.NewDesc("tenantguard_limiter_breakers",
		"Tenant/integration circuits by state (closed, open, half_open); decision-forced circuits count as open.",
		[]string{"state"}, nil)}
}

func (b *breakerStates) Describe(ch chan<- *prometheus.Desc) { ch <- b.desc }

func (b *breakerStates) Collect(ch chan<- prometheus.Metric) {
	var n [3]int
	for s, c := range b.l.breakers.count(time.Now()) {
		n[s] = c
	}
	for _, s := range []State{StateClosed, StateOpen, StateHalfOpen} {
		ch <- prometheus.MustNewConstMetric(b.desc, prometheus.GaugeValue, float64(n[s]), s.String())
	}
}

// count returns the number of circuits in each state at now.
func (b *Breakers) count(now time.Time) map[State]int {
	out := map[State]int{}
	ns := now.UnixNano()
	seen := map[bkey]bool{}
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.RLock()
		keys := make([]bkey, 0, len(sh.m))
		brs := make([]*breaker, 0, len(sh.m))
		for k, br := range sh.m {
			keys = append(keys, k)
			brs = append(brs, br)
		}
		sh.mu.RUnlock()
		for j, br := range brs {
			seen[keys[j]] = true
			if d, _, _ := b.forced(keys[j].tenant, keys[j].integration, now); d > 0 {
				out[StateOpen]++
				continue
			}
			br.mu.Lock()
			st := br.state
			if st == StateOpen && ns >= br.openUntil {
				st = StateHalfOpen
			}
			br.mu.Unlock()
			out[st]++
		}
	}
	for tenant, t := range b.l.snap.Load().tenants {
		for integ, exp := range t.circuits {
			if ns < exp && !seen[bkey{tenant, integ}] {
				out[StateOpen]++
			}
		}
	}
	return out
}
