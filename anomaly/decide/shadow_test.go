package decide

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/limiter"
)

// TestShadowMode: decisions.mode with its per-plan and per-tenant
// overrides. A shadow decision is published, applied and audited like an
// enforced one, with mode shadow; an enforced one omits the field.
func TestShadowMode(t *testing.T) {
	e := setup(t, func(c *Config) {
		c.Mode = limiter.ModeEnforce
		c.Plans = map[string]Policy{"pro": {Mode: limiter.ModeShadow}}
		c.Tenants = map[string]Policy{"strict": {Mode: limiter.ModeEnforce}}
	})
	ctx := context.Background()
	cases := []struct {
		tenant, plan string
		want         limiter.Mode
	}{
		{"trial", "pro", limiter.ModeShadow}, // the plan's override
		{"strict", "pro", ""},                // the tenant's override beats the plan's
		{"basic1", "basic", ""},              // the global mode
	}
	for _, c := range cases {
		a := alert(c.tenant, anomaly.MetricUsage, anomaly.StatusFiring, 60) // 1/s
		a.Labels["plan"] = c.plan
		if err := e.eng.Handle(ctx, a); err != nil {
			t.Fatal(err)
		}
		d, err := e.pub.Get(ctx, c.tenant, limiter.ScopeAll)
		if err != nil || d.Action != limiter.ActionThrottle || d.Mode != c.want {
			t.Fatalf("%s: got %+v, %v; want a throttle with mode %q", c.tenant, d, err, c.want)
		}
	}
	testenv.Eventually(t, 5*time.Second, "limiter holds the decisions", func() bool {
		_, ok1 := e.lim.Decision("trial", limiter.ScopeAll)
		_, ok2 := e.lim.Decision("strict", limiter.ScopeAll)
		return ok1 && ok2
	})
	now := time.Now()
	for i := range 100 {
		if !e.lim.AllowN("trial", now, 1) {
			t.Fatalf("request %d of the shadowed tenant rejected", i)
		}
	}
	rejected := 0
	for range 100 {
		if !e.lim.AllowN("strict", now, 1) {
			rejected++
		}
	}
	if rejected == 0 {
		t.Fatal("the enforced tenant was never rejected")
	}
	modes := map[string]string{}
	testenv.Eventually(t, 5*time.Second, "audit rows with their mode", func() bool {
		rows, err := e.st.Conn().Query(ctx, "SELECT tenant_id, mode FROM "+e.st.Database()+".decisions WHERE kv_op = 'put'")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var tenant, mode string
			if err := rows.Scan(&tenant, &mode); err != nil {
				t.Fatal(err)
			}
			modes[tenant] = mode
		}
		return len(modes) == 3
	})
	want := map[string]string{"trial": "shadow", "strict": "enforce", "basic1": "enforce"}
	for tenant, m := range want {
		if modes[tenant] != m {
			t.Errorf("audit mode of %s: got %q, want %q", tenant, modes[tenant], m)
		}
	}
}

func TestModeConfig(t *testing.T) {
	c := DefaultConfig()
	c.Mode = "dry"
	c.Plans = map[string]Policy{"pro": {Mode: "x"}}
	c.Tenants = map[string]Policy{"a.b": {Mode: limiter.ModeShadow}}
	err := c.Validate()
	for _, want := range []string{"decisions.mode:", "decisions.plans.pro.mode:", "decisions.tenants.a.b:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want it to name %s", err, want)
		}
	}
	c = DefaultConfig()
	c.Plans = map[string]Policy{"pro": {Mode: limiter.ModeShadow}}
	c.Tenants = map[string]Policy{"vip": {Mode: limiter.ModeEnforce}}
	for _, tc := range []struct {
		tenant, plan string
		want         limiter.Mode
	}{{"x", "free", limiter.ModeEnforce}, {"x", "pro", limiter.ModeShadow}, {"vip", "pro", limiter.ModeEnforce}} {
		if got := c.ModeFor(tc.tenant, tc.plan); got != tc.want {
			t.Errorf("ModeFor(%s, %s) = %s, want %s", tc.tenant, tc.plan, got, tc.want)
		}
	}
}
