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
		gen.Tenants, gen.Days = 80, 14
	}
	rep, _, err := Evaluate(gen, anomaly.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	rep.Print(os.Stdout)
	for _, e := range rep.False {
		t.Logf("false alert: %+v", e)
	}
	if rep.Recall() < 0.95 {
		t.Errorf("recall %.3f, want >= 0.95", rep.Recall())
	}
	if rep.FalsePerTenantDay() > 0.001 {
		t.Errorf("false alerts per tenant-day %.5f, want <= 0.001", rep.FalsePerTenantDay())
	}
	if rep.ShiftAlerts != 0 || rep.WeekendAlerts != 0 {
		t.Errorf("shift alerts %d, weekend alerts %d, want 0", rep.ShiftAlerts, rep.WeekendAlerts)
	}
	if rep.MedianDelay > 2 {
		t.Errorf("median delay %.1f windows, want <= 2", rep.MedianDelay)
	}
	if r := rep.LatRecall(); rep.LatDoubling > 0 && r < 0.95 {
		t.Errorf("P95 doubling recall %.3f, want >= 0.95", r)
	}
}
