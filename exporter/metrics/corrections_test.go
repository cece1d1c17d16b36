package metrics

import (
	"math"
	"testing"

	"github.com/tenantguard/tenantguard/collector/event"
)

func correction(tenant, kind string, count int64, cost float64) *event.CorrectionEffect {
	return &event.CorrectionEffect{TenantID: tenant, Kind: kind, Count: count, Cost: cost}
}

// TestCorrectionsAreTheirOwnCounters checks that corrections leave the
// ingest counters alone (counters never decrease) and count in their own
// series, capped to the top-K like every tenant series.
func TestCorrectionsAreTheirOwnCounters(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxTenantSeries = 1
	m, reg, clk := newTest(t, cfg)
	for range 10 {
		m.Observe(ev("acme", event.KindAITokens, 100, 0, false), 0.5)
	}
	m.Observe(ev("globex", event.KindAITokens, 100, 0, false), 0.5)
	scrape(t, reg) // acme takes the one series, globex is in the overflow
	clk.advance(10)

	m.ObserveCorrection(correction("acme", event.KindAITokens, -1, -0.5))    // a void
	m.ObserveCorrection(correction("acme", event.KindAITokens, 0, -0.2))     // an amendment down
	m.ObserveCorrection(correction("acme", event.KindAITokens, 0, 0.1))      // an amendment up
	m.ObserveCorrection(correction("globex", event.KindAITokens, -1, -0.5))  // overflow
	m.ObserveCorrection(correction("initech", event.KindAPIRequest, -1, -1)) // not seen since start
	s := scrape(t, reg)

	corr := series(s, "tenantguard_tenant_corrections_total")
	if corr["acme/ai_tokens"] != 3 || corr[OverflowTenant+"/ai_tokens"] != 1 || corr[OverflowTenant+"/api_request"] != 1 || len(corr) != 3 {
		t.Fatalf("corrections_total = %v", corr)
	}
	credit, debit := map[string]float64{}, map[string]float64{}
	for _, x := range s {
		if x.name == "tenantguard_tenant_corrected_cost_total" {
			if x.labels["direction"] == "credit" {
				credit[x.labels["tenant"]] = x.value
			} else {
				debit[x.labels["tenant"]] = x.value
			}
		}
	}
	if math.Abs(credit["acme"]-0.7) > 1e-9 || math.Abs(debit["acme"]-0.1) > 1e-9 || credit[OverflowTenant] != 1.5 || debit[OverflowTenant] != 0 {
		t.Fatalf("corrected cost: credit %v debit %v", credit, debit)
	}
	if ev := series(s, "tenantguard_tenant_events_total"); ev["acme/ai_tokens"] != 10 || sum(ev) != 11 {
		t.Fatalf("events_total changed by corrections: %v", ev)
	}
	if c := series(s, "tenantguard_tenant_cost_total"); c["acme"] != 5 {
		t.Fatalf("cost_total changed by corrections: %v", c)
	}
}
