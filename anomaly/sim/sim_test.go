package sim

import (
	"os"
	"testing"
	"time"

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

// TestShortRuns: a scored period of a day or less (or none) generates
// traffic without injections that do not fit, instead of failing.
func TestShortRuns(t *testing.T) {
	for _, days := range []int{1, 7, 8} {
		gen := DefaultConfig()
		gen.Tenants, gen.Days = 5, days
		rows := 0
		tr := Generate(gen, func(*anomaly.Rollup) { rows++ })
		if want := 5 * days * 1440; rows != want {
			t.Errorf("%d days: %d rows, want %d", days, rows, want)
		}
		for _, in := range tr.Injections {
			if in.End.After(gen.Start.Add(time.Duration(days) * 24 * time.Hour)) {
				t.Errorf("%d days: injection %+v ends after the traffic", days, in)
			}
		}
	}
}
