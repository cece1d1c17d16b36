package limiter

import (
	"context"
	"errors"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

func newLocal(t testing.TB, mod func(*Config), deps Deps) *Limiter {
	t.Helper()
	cfg := DefaultConfig()
	if mod != nil {
		mod(&cfg)
	}
	l, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func throttle(tenant string, rate float64, burst uint32, src Source, ttl time.Duration) Decision {
	now := time.Now()
	return Decision{TenantID: tenant, Scope: ScopeAll, Action: ActionThrottle, RatePerSec: rate, Burst: burst,
		IssuedAt: now, ExpiresAt: now.Add(ttl), Reason: "test", Source: src}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	c := DefaultConfig()
	c.Group = "a.b"
	c.HeartbeatInterval = time.Second
	c.Breaker.ErrorRatio = 2
	c.Plans = map[string]PlanLimit{"free": {RatePerSec: -1}}
	err := c.Validate()
	for _, want := range []string{"limiter.Config.Group:", "limiter.Config.PresenceTTL:", "limiter.Config.Breaker.ErrorRatio:", `limiter.Config.Plans["free"].RatePerSec:`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want it to name %s", err, want)
		}
	}
}

func TestAllowUnlimitedAndThrottled(t *testing.T) {
	l := newLocal(t, nil, Deps{})
	for range 1000 {
		if !l.Allow("quiet") {
			t.Fatal("a tenant without a decision was throttled")
		}
	}
	if err := l.Apply(throttle("noisy", 1, 5, SourceManual, time.Minute)); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	allowed := 0
	for range 100 {
		if l.AllowN("noisy", now, 1) {
			allowed++
		}
	}
	if allowed != 5 {
		t.Fatalf("got %d allowed at one instant, want the burst 5", allowed)
	}
	if !l.Allow("quiet") {
		t.Fatal("throttling noisy touched quiet")
	}
	if r, b, ok := l.Limit("noisy"); !ok || r != 1 || b != 5 {
		t.Fatalf("Limit = %v, %d, %v; want 1, 5, true", r, b, ok)
	}
	// A live change keeps the bucket and its tokens: tokens stay at 0.
	if err := l.Apply(throttle("noisy", 1000, 5, SourceManual, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if l.AllowN("noisy", now, 1) {
		t.Fatal("a raised limit refilled the bucket instantly; want the tokens kept")
	}
	if !l.AllowN("noisy", now.Add(10*time.Millisecond), 5) {
		t.Fatal("raised limit not applied live")
	}
	clr := throttle("noisy", 0, 0, SourceManual, time.Minute)
	clr.Action = ActionClear
	if err := l.Apply(clr); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := l.Limit("noisy"); ok {
		t.Fatal("clear did not remove the limit")
	}
}

func TestShedAndWait(t *testing.T) {
	l := newLocal(t, nil, Deps{})
	d := throttle("bad", 0, 0, SourceManual, time.Minute)
	d.Action = ActionShed
	if err := l.Apply(d); err != nil {
		t.Fatal(err)
	}
	if l.Allow("bad") {
		t.Fatal("shed tenant allowed")
	}
	if err := l.Wait(context.Background(), "bad"); !errors.Is(err, ErrShed) {
		t.Fatalf("Wait = %v, want ErrShed", err)
	}
	if err := l.Apply(throttle("slow", 20, 1, SourceManual, time.Minute)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 3 {
		if err := l.Wait(context.Background(), "slow"); err != nil {
			t.Fatal(err)
		}
	}
	if el := time.Since(start); el < 90*time.Millisecond {
		t.Fatalf("3 waits at 20/s with burst 1 took %s, want >= 100ms", el)
	}
	if err := l.Wait(context.Background(), "free"); err != nil {
		t.Fatalf("Wait for an unlimited tenant: %v", err)
	}
}

func TestLocalExpiry(t *testing.T) {
	l := newLocal(t, nil, Deps{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Run(ctx)
	if err := l.Apply(throttle("t1", 0.001, 1, SourceManual, 300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	l.Allow("t1")
	if l.Allow("t1") {
		t.Fatal("throttle not applied")
	}
	// The hot path honours the expiry itself, whatever the timer does.
	if !l.AllowN("t1", time.Now().Add(time.Second), 1) {
		t.Fatal("hot path ignored the expiry")
	}
	testenv.Eventually(t, 2*time.Second, "decision dropped after expiry", func() bool {
		_, ok := l.Decision("t1", ScopeAll)
		return !ok && len(l.snap.Load().tenants) == 0
	})
	if !l.Allow("t1") {
		t.Fatal("expired decision still throttles")
	}
}

func TestPlanDefaults(t *testing.T) {
	l := newLocal(t, func(c *Config) {
		c.DefaultRatePerSec = 100
		c.Plans = map[string]PlanLimit{"free": {RatePerSec: 1, Burst: 2}, "enterprise": {}}
	}, Deps{PlanOf: func(t string) string {
		if strings.HasPrefix(t, "free") {
			return "free"
		}
		if strings.HasPrefix(t, "ent") {
			return "enterprise"
		}
		return ""
	}})
	now := time.Now()
	count := func(tenant string) int {
		n := 0
		for range 500 {
			if l.AllowN(tenant, now, 1) {
				n++
			}
		}
		return n
	}
	if got := count("free-1"); got != 2 {
		t.Errorf("free plan: got %d, want burst 2", got)
	}
	if got := count("ent-1"); got != 500 {
		t.Errorf("enterprise plan (unlimited): got %d, want 500", got)
	}
	if got := count("other"); got != 100 {
		t.Errorf("default: got %d, want burst 100", got)
	}
}

func TestSplitMath(t *testing.T) {
	cases := []struct {
		rate     float64
		burst, n int
		wantR    rate.Limit
		wantB    int
	}{
		{100, 10, 1, 100, 10},
		{100, 10, 3, 100.0 / 3, 3},
		{100, 10, 4, 25, 2},
		{100, 2, 5, 20, 1},
		{0, 0, 3, 0, 0},
	}
	for _, c := range cases {
		r, b := split(c.rate, c.burst, c.n)
		if r != c.wantR || b != c.wantB {
			t.Errorf("split(%v, %d, %d) = %v, %d; want %v, %d", c.rate, c.burst, c.n, r, b, c.wantR, c.wantB)
		}
		if c.burst >= c.n && b*c.n > c.burst {
			t.Errorf("cluster burst %d exceeds %d", b*c.n, c.burst)
		}
	}
	l := newLocal(t, nil, Deps{})
	if err := l.Apply(throttle("t", 90, 30, SourceManual, time.Minute)); err != nil {
		t.Fatal(err)
	}
	l.setInstances(3)
	if r, b, _ := l.Limit("t"); r != 30 || b != 10 {
		t.Fatalf("after 3 instances: %v, %d; want 30, 10", r, b)
	}
	l.setInstances(1)
	if r, b, _ := l.Limit("t"); r != 90 || b != 30 {
		t.Fatalf("after 1 instance: %v, %d; want 90, 30", r, b)
	}
}

func TestMetricsCardinality(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	l := newLocal(t, func(c *Config) { c.MaxTenantSeries = 2 }, Deps{Registerer: reg})
	for _, tn := range []string{"a", "b", "c", "d"} {
		if err := l.Apply(throttle(tn, 1, 1, SourceManual, time.Minute)); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		l.AllowN(tn, now, 1) // allowed
		l.AllowN(tn, now, 1) // throttled
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var overflow float64
	n := 0
	for _, mf := range mfs {
		if mf.GetName() != "tenantguard_limiter_throttled_total" {
			continue
		}
		n = len(mf.GetMetric())
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == overflowLabel {
				overflow = m.GetCounter().GetValue()
			}
		}
	}
	if n != 3 {
		t.Fatalf("got %d throttled series, want 3 (2 tenants + __overflow__)", n)
	}
	if overflow != 2 {
		t.Fatalf("__overflow__ throttled = %v, want 2", overflow)
	}
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[len(s)/2]
}
