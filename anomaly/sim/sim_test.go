package sim

import (
	"os"
	"testing"

	"github.com/tenantguard/tenantguard/anomaly"
)

// TestQuality replays seeded traffic and checks the detector's goals. The
// default is a reduced run; TENANTGUARD_SIM_FULL=1 runs the full default
// configuration (300 tenants, 21 days).
func TestQuality(t *testing.T) {
	gen := DefaultConfig()
	if os.Getenv("TENANTGUARD_SIM_FULL") == "" {
		gen.Tenants, gen.Days = 100, 14
	}
	rep, _, err := Evaluate(gen, anomaly.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	rep.Print(os.Stdout)
	for _, e := range rep.False {
		t.Logf("false alert: %+v", e)
	}
	if m := rep.Missed(); len(m) > 0 {
		t.Errorf("goals missed: %v", m)
	}
}
