package decide

import (
	"context"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/limiter"
)

// TestUserSpikeThrottlesTheUser: a usage alert whose heaviest user made
// most of the window's events throttles that user, not the tenant; the
// tenant's other users are never rejected; the resolution (which names no
// user) clears the user's decision.
func TestUserSpikeThrottlesTheUser(t *testing.T) {
	e := setup(t, nil)
	ctx := context.Background()
	fire := alert("acme", anomaly.MetricUsage, anomaly.StatusFiring, 600) // 10/s
	fire.Labels[anomaly.LabelTopUser] = "u_heavy"
	fire.Labels[anomaly.LabelTopUserEvents] = "2700"
	fire.Labels[anomaly.LabelWindowEvents] = "3000"
	if err := e.eng.Handle(ctx, fire); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pub.Get(ctx, "acme", limiter.ScopeAll); err == nil {
		t.Fatal("the whole tenant was throttled")
	}
	d, err := e.pub.Get(ctx, "acme", limiter.UserScope("u_heavy"))
	if err != nil || d.Action != limiter.ActionThrottle {
		t.Fatalf("got %+v, %v; want a throttle of user:u_heavy", d, err)
	}
	// factor 2 x 600/min = 1200/min for the tenant, the others made 300:
	// the user gets (1200 - 300) / 60 s = 15/s.
	if d.RatePerSec != 15 || d.Burst != 30 {
		t.Fatalf("got rate %v burst %d, want 15/s and 30", d.RatePerSec, d.Burst)
	}
	testenv.Eventually(t, 5*time.Second, "limiter applies it", func() bool { return e.lim.HasUserDecisions("acme") })
	now := time.Now()
	heavy := 0
	for range 200 {
		if e.lim.AllowN("acme", now, 1) != true {
			t.Fatal("the tenant was limited")
		}
		if e.lim.CheckUser("acme", "", "u_heavy", now).Allowed {
			heavy++
		}
		for _, u := range []string{"u_a", "u_b", ""} {
			if !e.lim.CheckUser("acme", "", u, now).Allowed {
				t.Fatalf("user %q of the tenant was rejected", u)
			}
		}
	}
	if heavy != 30 {
		t.Fatalf("heavy user allowed %d at one instant, want the burst 30", heavy)
	}
	// Below the share: the tenant is throttled as before.
	even := alert("beta", anomaly.MetricUsage, anomaly.StatusFiring, 600)
	even.Labels[anomaly.LabelTopUser] = "u1"
	even.Labels[anomaly.LabelTopUserEvents] = "900"
	even.Labels[anomaly.LabelWindowEvents] = "3000"
	if err := e.eng.Handle(ctx, even); err != nil {
		t.Fatal(err)
	}
	if d, err := e.pub.Get(ctx, "beta", limiter.ScopeAll); err != nil || d.RatePerSec != 20 {
		t.Fatalf("got %+v, %v; want the tenant throttled to 20/s", d, err)
	}
	res := fire
	res.Status, res.EndsAt = anomaly.StatusResolved, time.Now()
	res.Labels = map[string]string{"plan": "pro"}
	if err := e.eng.Handle(ctx, res); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pub.Get(ctx, "acme", limiter.UserScope("u_heavy")); err == nil {
		t.Fatal("the user's decision was not cleared by the resolution")
	}
	if n := len(e.eng.Active()); n != 1 {
		t.Fatalf("engine holds %d decisions, want 1 (beta's)", n)
	}
}
