package limiter

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestBreakerTransitions(t *testing.T) {
	l := newLocal(t, func(c *Config) {
		c.Breaker.MinRequests = 10
		c.Breaker.ErrorRatio = 0.5
		c.Breaker.OpenFor = 150 * time.Millisecond
		c.Breaker.HalfOpenProbes = 2
	}, Deps{})
	b := l.Breakers()
	boom := errors.New("boom")
	call := func(err error) error {
		return b.Do(context.Background(), "acme", "stripe", func(context.Context) error { return err })
	}
	// Below the minimum request count, even 100% errors keep it closed.
	for range 9 {
		if err := call(boom); !errors.Is(err, boom) {
			t.Fatalf("got %v, want boom", err)
		}
	}
	if s := b.State("acme", "stripe"); s != StateClosed {
		t.Fatalf("after 9 failures: %s, want closed (min requests 10)", s)
	}
	// Successes keep the ratio below 0.5: still closed.
	for range 11 {
		_ = call(nil)
	}
	if s := b.State("acme", "stripe"); s != StateClosed {
		t.Fatalf("9/20 failed: %s, want closed", s)
	}
	_ = call(boom) // 10/21 < 0.5
	_ = call(boom) // 11/22 = 0.5: opens
	if s := b.State("acme", "stripe"); s != StateOpen {
		t.Fatalf("11/22 failed: %s, want open", s)
	}
	err := call(nil)
	var coe *CircuitOpenError
	if !errors.As(err, &coe) || coe.Forced || !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("open circuit: got %v, want a local *CircuitOpenError", err)
	}
	if s := b.State("acme", "other"); s != StateClosed {
		t.Fatalf("another integration: %s, want closed", s)
	}
	if err := b.Allow("other-tenant", "stripe"); err != nil {
		t.Fatalf("another tenant: %v", err)
	}
	time.Sleep(160 * time.Millisecond)
	if s := b.State("acme", "stripe"); s != StateHalfOpen {
		t.Fatalf("after open_for: %s, want half_open", s)
	}
	// Half-open admits 2 probes; a third concurrent one is rejected.
	if err := b.Allow("acme", "stripe"); err != nil {
		t.Fatal(err)
	}
	if err := b.Allow("acme", "stripe"); err != nil {
		t.Fatal(err)
	}
	if err := b.Allow("acme", "stripe"); !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("third probe: got %v, want ErrCircuitOpen", err)
	}
	b.Report("acme", "stripe", nil)
	b.Report("acme", "stripe", boom) // a failed probe re-opens
	if s := b.State("acme", "stripe"); s != StateOpen {
		t.Fatalf("failed probe: %s, want open", s)
	}
	time.Sleep(160 * time.Millisecond)
	for range 2 {
		if err := call(nil); err != nil {
			t.Fatalf("probe: %v", err)
		}
	}
	if s := b.State("acme", "stripe"); s != StateClosed {
		t.Fatalf("2 good probes: %s, want closed", s)
	}
	// Cancelled calls are not integration failures.
	for range 30 {
		_ = call(context.Canceled)
	}
	if s := b.State("acme", "stripe"); s != StateClosed {
		t.Fatalf("cancellations: %s, want closed", s)
	}
}

func TestBreakerForcedByDecision(t *testing.T) {
	l := newLocal(t, nil, Deps{})
	now := time.Now()
	d := Decision{TenantID: "acme", Scope: IntegrationScope("stripe"), Action: ActionOpenCircuit,
		IssuedAt: now, ExpiresAt: now.Add(time.Minute), Source: SourceAnomaly}
	if err := l.Apply(d); err != nil {
		t.Fatal(err)
	}
	ran := false
	err := l.Do(context.Background(), "acme", "stripe", func(context.Context) error { ran = true; return nil })
	var coe *CircuitOpenError
	if !errors.As(err, &coe) || !coe.Forced || ran {
		t.Fatalf("got %v (ran %v), want a forced *CircuitOpenError and fn not run", err, ran)
	}
	if coe.RetryAfter < 59*time.Second {
		t.Fatalf("RetryAfter %s, want about the decision's remaining minute", coe.RetryAfter)
	}
	if err := l.Breakers().Allow("acme", "github"); err != nil {
		t.Fatalf("other integration: %v", err)
	}
	d.Action = ActionClear
	if err := l.Apply(d); err != nil {
		t.Fatal(err)
	}
	if s := l.Breakers().State("acme", "stripe"); s != StateClosed {
		t.Fatalf("after clear: %s, want closed", s)
	}
}
