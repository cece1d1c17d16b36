package limiter

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestBreakerStateMetric: tenantguard_limiter_breakers{state} counts the
// circuits in each state, decision-forced ones as open.
func TestBreakerStateMetric(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	l := newLocal(t, func(c *Config) {
		c.Breaker.MinRequests = 4
		c.Breaker.OpenFor = 100 * time.Millisecond
	}, Deps{Registerer: reg})
	b := l.Breakers()
	boom := errors.New("boom")
	fail := func(tenant, integ string, n int) {
		for range n {
			_ = b.Do(context.Background(), tenant, integ, func(context.Context) error { return boom })
		}
	}
	_ = b.Do(context.Background(), "acme", "mail", func(context.Context) error { return nil }) // closed
	fail("acme", "stripe", 4)                                                                  // opens
	fail("globex", "stripe", 4)                                                                // opens, then half-open below
	now := time.Now()
	if err := l.Apply(Decision{TenantID: "initech", Scope: IntegrationScope("llm"), Action: ActionOpenCircuit,
		IssuedAt: now, ExpiresAt: now.Add(time.Minute), Source: SourceManual}); err != nil {
		t.Fatal(err)
	}
	check := func(want map[string]float64) {
		t.Helper()
		got := gaugeByLabel(t, reg, "tenantguard_limiter_breakers", "state")
		for s, w := range want {
			if got[s] != w {
				t.Errorf("breakers{state=%q} = %v, want %v (all: %v)", s, got[s], w, got)
			}
		}
	}
	check(map[string]float64{"closed": 1, "open": 3, "half_open": 0})
	time.Sleep(120 * time.Millisecond)
	check(map[string]float64{"closed": 1, "open": 1, "half_open": 2})
}

func gaugeByLabel(t *testing.T, reg prometheus.Gatherer, name, label string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label {
					out[lp.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	return out
}
