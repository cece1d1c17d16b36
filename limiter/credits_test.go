package limiter

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

func creditPlans(c *Config) {
	c.Plans = map[string]PlanLimit{
		"premium": {RatePerSec: 10, Burst: 10, BurstCredits: BurstCredits{AccruePerSec: 5, Max: 50}},
		"basic":   {RatePerSec: 10, Burst: 10},
	}
}

func planOf(tenant string) string {
	if tenant[0] == 'p' {
		return "premium"
	}
	return "basic"
}

// TestBurstCredits: a premium tenant's burst past its limit passes on its
// banked credits and a basic tenant's does not; spent and remaining
// credits are exported.
func TestBurstCredits(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	l := newLocal(t, creditPlans, Deps{PlanOf: planOf, Registerer: reg})
	now := time.Now()
	burst := func(tenant string, at time.Time) int {
		n := 0
		for range 100 {
			if l.AllowN(tenant, at, 1) {
				n++
			}
		}
		return n
	}
	if p, b := burst("pro1", now), burst("bas1", now); p != 60 || b != 10 {
		t.Fatalf("got premium %d, basic %d allowed; want 60 (burst 10 + 50 credits) and 10", p, b)
	}
	if got := testenv.MetricValue(t, reg, "tenantguard_limiter_burst_credits_spent_total", "tenant", "pro1"); got != 50 {
		t.Fatalf("credits spent %v, want 50", got)
	}
	// Credits accrue back at 5/s, beside the limit's own tokens (10/s, at
	// most its burst of 10).
	later := now.Add(2 * time.Second)
	if p := burst("pro1", later); p != 20 {
		t.Fatalf("2 s later premium got %d, want 20 (10 tokens + 10 credits)", p)
	}
	// They apply under a throttle decision too, not under a shadow one.
	if err := l.Apply(throttle("pro2", 1, 1, SourceAnomaly, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if p := burst("pro2", now); p != 51 {
		t.Fatalf("throttled premium got %d, want 51 (burst 1 + 50 credits)", p)
	}
	if err := l.Apply(throttle("bas2", 1, 1, SourceAnomaly, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if b := burst("bas2", now); b != 1 {
		t.Fatalf("throttled basic got %d, want 1", b)
	}
	remaining := testenv.MetricValue(t, reg, "tenantguard_limiter_burst_credits_remaining", "tenant", "pro2")
	if remaining > 1 {
		t.Fatalf("pro2 has %v credits left, want about 0", remaining)
	}
	// Headers: Check spends credits the same way.
	if err := l.Apply(throttle("pro3", 1, 1, SourceAnomaly, time.Minute)); err != nil {
		t.Fatal(err)
	}
	ok := 0
	for range 60 {
		if l.Check("pro3", "", now).Allowed {
			ok++
		}
	}
	if ok != 51 {
		t.Fatalf("Check allowed %d, want 51", ok)
	}
}

// TestBurstCreditsOverNATS: two instances of a group split the credits
// like the rate; with a throttle decision from the bucket, a premium
// tenant's burst passes and a basic tenant's does not.
func TestBurstCreditsOverNATS(t *testing.T) {
	srv := testenv.NATS(t)
	pub := newPublisher(t, srv.URL)
	var ins []*instance
	for range 2 {
		in := start(t, srv.URL, creditPlans)
		in.deps.PlanOf = planOf
		ins = append(ins, in)
	}
	testenv.Eventually(t, 5*time.Second, "2 instances", func() bool { return ins[0].Instances() == 2 && ins[1].Instances() == 2 })
	ctx := context.Background()
	for _, tenant := range []string{"pro", "bas"} {
		if _, err := pub.Put(ctx, throttle(tenant, 2, 2, SourceAnomaly, time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 5*time.Second, "decisions applied", func() bool {
		for _, in := range ins {
			for _, tenant := range []string{"pro", "bas"} {
				if _, ok := in.Decision(tenant, ScopeAll); !ok {
					return false
				}
			}
		}
		return true
	})
	now := time.Now()
	got := map[string]int{}
	for _, in := range ins {
		for range 100 {
			for _, tenant := range []string{"pro", "bas"} {
				if in.AllowN(tenant, now, 1) {
					got[tenant]++
				}
			}
		}
	}
	// Each instance: burst 2/2 = 1, credits 50/2 = 25.
	if got["pro"] != 52 || got["bas"] != 2 {
		t.Fatalf("got %v allowed across the cluster; want pro 52 (2 burst + 50 credits), bas 2", got)
	}
}
