package loadgen

import (
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
)

// Two runs with one seed send the same traffic under different ids: equal
// ids would be discarded by JetStream's duplicate window as retries.
func TestSameSeedSameTrafficNewIDs(t *testing.T) {
	cfg := DefaultConfig()
	a, err := NewGenerator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewGenerator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := event.NewValidator(event.Rules{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	seen := map[string]bool{}
	var ea, eb event.Event
	for i := 0; i < 1000; i++ {
		ti := a.pickTenant()
		if tj := b.pickTenant(); tj != ti {
			t.Fatalf("event %d: tenant index %d vs %d with the same seed", i, ti, tj)
		}
		a.Event(&ea, ti, now)
		b.Event(&eb, ti, now)
		if ea.Kind != eb.Kind || ea.Quantity != eb.Quantity || ea.LatencyMs != eb.LatencyMs {
			t.Fatalf("event %d differs between runs with the same seed: %+v vs %+v", i, ea, eb)
		}
		if ea.ID == eb.ID {
			t.Fatalf("event %d: both runs used id %q", i, ea.ID)
		}
		if seen[ea.ID] {
			t.Fatalf("event %d: id %q repeats within a run", i, ea.ID)
		}
		seen[ea.ID] = true
		if verr := v.Validate(&ea, event.Subject(ea.TenantID, ea.Kind)); verr != nil {
			t.Fatalf("event %d is invalid: %v", i, verr)
		}
	}
}
