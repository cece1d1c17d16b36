package limiter

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

// TestPublisherRefusesBeforeWriting: what limiters would reject, or what
// the audit table cannot hold, is refused with a clear error and never
// reaches the bucket.
func TestPublisherRefusesBeforeWriting(t *testing.T) {
	srv := testenv.NATS(t)
	pub := newPublisher(t, srv.URL)
	kv := decisionsKV(t, srv.URL)
	ctx := context.Background()
	unsigned, err := NewPublisher(ctx, connect(t, srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unsigned.Put(ctx, throttle("acme", 1, 1, SourceManual, time.Hour)); !errors.Is(err, ErrNoSigner) {
		t.Fatalf("Put without a signer: got %v, want ErrNoSigner", err)
	}
	if err := unsigned.Clear(ctx, "acme", ScopeAll, SourceManual); !errors.Is(err, ErrNoSigner) {
		t.Fatalf("Clear without a signer: got %v, want ErrNoSigner", err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	mod := func(f func(*Decision)) Decision {
		d := throttle("acme", 1, 1, SourceManual, time.Hour)
		f(&d)
		return d
	}
	for _, c := range []struct {
		name string
		d    Decision
		is   error
		want string
	}{
		{"manual for 8 days", mod(func(d *Decision) { d.ExpiresAt = d.IssuedAt.Add(8 * 24 * time.Hour) }),
			ErrExpiryTooFar, "the cap for manual decisions is 168h0m0s"},
		{"manual for 2562047h", mod(func(d *Decision) { d.ExpiresAt = d.IssuedAt.Add(2562047 * time.Hour) }),
			ErrInvalidDecision, "expires_at: 2319"},
		{"automatic for 2h", mod(func(d *Decision) { d.Source = SourceAnomaly; d.ExpiresAt = d.IssuedAt.Add(2 * time.Hour) }),
			ErrExpiryTooFar, "the cap for anomaly decisions is 1h0m0s"},
		{"issued next week", mod(func(d *Decision) {
			d.IssuedAt, d.ExpiresAt = now.Add(8*24*time.Hour), now.Add(8*24*time.Hour+time.Minute)
		}),
			ErrExpiryTooFar, "from now"},
		{"ANSI escape in reason", mod(func(d *Decision) { d.Reason = "\x1b[31mred" }),
			ErrInvalidDecision, "reason: control character U+001B"},
	} {
		if _, err := pub.Put(ctx, c.d); !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %v mentioning %q", c.name, err, c.is, c.want)
		}
	}
	if _, err := kv.Get(ctx, "acme"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the bucket holds acme after refused writes: %v", err)
	}
}

// TestForgedManualOutranksNothing: an unsigned "manual" decision that never
// expires cannot block the engine's automatic decisions.
func TestForgedManualOutranksNothing(t *testing.T) {
	srv := testenv.NATS(t)
	pub := newPublisher(t, srv.URL)
	in := start(t, srv.URL, nil)
	kv := decisionsKV(t, srv.URL)
	ctx := context.Background()
	forged := throttle("acme", 0, 0, SourceManual, time.Hour)
	forged.Action = ActionShed
	if err := put(kv, marshal(t, forged))("acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Put(ctx, throttle("acme", 50, 50, SourceAnomaly, 5*time.Minute)); err != nil {
		t.Fatalf("automatic over a forged manual decision: %v", err)
	}
	testenv.Eventually(t, 2*time.Second, "the automatic throttle applied", func() bool { r, _, ok := in.Limit("acme"); return ok && r == 50 })
	// A signed manual one does outrank it.
	if _, err := pub.Put(ctx, throttle("acme", 5, 5, SourceManual, time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Put(ctx, throttle("acme", 50, 50, SourceAnomaly, 5*time.Minute)); !errors.Is(err, ErrManualOverride) {
		t.Fatalf("automatic over a signed manual decision: got %v, want ErrManualOverride", err)
	}
}

// TestClearIsASignedTombstone: a clear is a signed decision that lasts as
// long as what it clears, so a limiter that reconnects late still sees it;
// it reads as absent, and the sweep removes it once it expires.
func TestClearIsASignedTombstone(t *testing.T) {
	srv := testenv.NATS(t)
	pub := newPublisher(t, srv.URL)
	kv := decisionsKV(t, srv.URL)
	ctx := context.Background()
	d := throttle("acme", 5, 5, SourceAnomaly, 10*time.Minute)
	if _, err := pub.Put(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := pub.Clear(ctx, "acme", ScopeAll, SourceAnomaly); err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(nil, 0, false)
	v.keys[testSigner(t, 1).KeyID()] = testSigner(t, 1).PublicKey()
	tomb, err := v.Check("acme", e.Value(), time.Now())
	if err != nil || tomb.Action != ActionClear || tomb.ExpiresAt.Before(d.ExpiresAt.Truncate(time.Second)) {
		t.Fatalf("stored %+v, %v; want a signed clear lasting until %s", tomb, err, d.ExpiresAt)
	}
	if _, err := pub.Get(ctx, "acme", ScopeAll); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("Get after a clear: %v, want ErrKeyNotFound", err)
	}
	if ds, err := pub.List(ctx, true); err != nil || len(ds) != 0 {
		t.Fatalf("List after a clear: %+v, %v; want none", ds, err)
	}
	if n, err := pub.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("Sweep swept %d, %v; want the live tombstone kept", n, err)
	}
	// The engine clearing what is absent writes nothing; a manual release
	// always writes, lasting the manual cap, for a decision a limiter may
	// hold after its value was deleted.
	if err := pub.Clear(ctx, "other", ScopeAll, SourceAnomaly); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, "other"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("automatic clear of an absent key wrote %v", err)
	}
	if err := pub.Clear(ctx, "other", ScopeAll, SourceManual); err != nil {
		t.Fatal(err)
	}
	e, err = kv.Get(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	tomb, err = v.Check("other", e.Value(), time.Now())
	if err != nil || tomb.ExpiresAt.Sub(tomb.IssuedAt) != DefaultMaxManualTTL {
		t.Fatalf("manual release of an absent key stored %+v, %v; want a clear lasting %s", tomb, err, DefaultMaxManualTTL)
	}
}
