package limiter

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

// decisionsKV opens the decisions bucket directly, as anyone with write
// access to it could.
func decisionsKV(t *testing.T, url string) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), DecisionsBucketConfig().Bucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func marshal(t *testing.T, d Decision) []byte {
	t.Helper()
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestForgedDecisionIgnored: anyone who can write to the bucket tries to
// throttle, shed or release tenants without the writers' key. A limiter
// that trusts only that key ignores every attempt, keeps what it had for
// the key, and counts each one by reason; a signed release still works.
func TestForgedDecisionIgnored(t *testing.T) {
	srv := testenv.NATS(t)
	pub := newPublisher(t, srv.URL)
	reg := prometheus.NewPedanticRegistry()
	in := startWith(t, srv.URL, nil, reg)
	kv := decisionsKV(t, srv.URL)
	ctx := context.Background()

	real := throttle("acme", 5, 5, SourceManual, time.Hour)
	if _, err := pub.Put(ctx, real); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Second, "the signed throttle applied", func() bool { r, _, ok := in.Limit("acme"); return ok && r == 5 })
	signed, err := kv.Get(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}

	now := time.Now().UTC().Truncate(time.Second)
	shed := Decision{TenantID: "victim", Scope: ScopeAll, Action: ActionShed, IssuedAt: now,
		ExpiresAt: time.Date(2105, 1, 1, 0, 0, 0, 0, time.UTC), Reason: "x", Source: SourceManual}
	shedAcme := shed
	shedAcme.TenantID = "acme"
	tampered := map[string]any{}
	if err := json.Unmarshal(signed.Value(), &tampered); err != nil {
		t.Fatal(err)
	}
	tampered["rate_per_sec"] = 1000
	tamperedVal, _ := json.Marshal(tampered)
	longLived := throttle("victim", 1, 1, SourceManual, 30*24*time.Hour)
	ctrl := throttle("victim", 1, 1, SourceManual, time.Hour)
	ctrl.Reason = "pwned \x1b[2J\x1b[31mcleared screen"
	expired := throttle("acme", 1000, 1000, SourceManual, time.Hour)
	expired.IssuedAt, expired.ExpiresAt = now.Add(-2*time.Hour), now.Add(-time.Hour)
	forgedClear := throttle("acme", 0, 0, SourceManual, time.Hour)
	forgedClear.Action = ActionClear
	signer, stranger := testSigner(t, 1), testSigner(t, 2)

	cases := []struct {
		name   string
		key    string
		write  func(key string) error
		reason string
	}{
		{"unsigned shed until 2105", "victim", put(kv, marshal(t, shed)), RejectUnsigned},
		{"the issue's forged shed", "victim",
			put(kv, []byte(`{"action":"shed","source":"manual","expires_at":"2105-01-01T00:00:00Z"}`)), RejectUnsigned},
		{"unsigned shed over a signed throttle", "acme", put(kv, marshal(t, shedAcme)), RejectUnsigned},
		{"unsigned clear of a signed throttle", "acme", put(kv, marshal(t, forgedClear)), RejectUnsigned},
		{"KV delete of a signed throttle", "acme", func(key string) error { return kv.Delete(ctx, key) }, RejectUnsigned},
		{"KV purge of a signed throttle", "acme", func(key string) error { return kv.Purge(ctx, key) }, RejectUnsigned},
		{"signed value copied to another tenant", "victim", put(kv, signed.Value()), RejectBadSignature},
		{"signed value with the rate changed", "acme", put(kv, tamperedVal), RejectBadSignature},
		{"signed by an unknown key", "victim", put(kv, marshal(t, stranger.Sign("victim", throttle("victim", 1, 1, SourceManual, time.Hour)))), RejectUnknownKey},
		{"signed, expiring in 30 days", "victim", put(kv, marshal(t, signer.Sign("victim", longLived))), RejectExpiryTooFar},
		{"signed, ANSI escapes in reason", "victim", put(kv, marshal(t, signer.Sign("victim", ctrl))), RejectInvalid},
		{"signed but expired: a replay", "acme", put(kv, marshal(t, signer.Sign("acme", expired))), RejectExpired},
		{"not JSON", "victim", put(kv, []byte("shed everyone")), RejectMalformed},
	}
	for _, c := range cases {
		before := in.Rejected(c.reason)
		if err := c.write(c.key); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		testenv.Eventually(t, 2*time.Second, c.name+": counted as "+c.reason, func() bool { return in.Rejected(c.reason) == before+1 })
		if r, b, ok := in.Limit("acme"); !ok || r != 5 || b != 5 {
			t.Fatalf("%s: acme limit %v/%v/%v, want the signed throttle 5/s burst 5 kept", c.name, r, b, ok)
		}
		if _, _, ok := in.Limit("victim"); ok {
			t.Fatalf("%s: victim got a limit", c.name)
		}
	}
	for _, c := range cases {
		got := testenv.MetricValue(t, reg, "tenantguard_limiter_decisions_rejected_total", "reason", c.reason)
		if got < 1 {
			t.Errorf("tenantguard_limiter_decisions_rejected_total{reason=%q} = %v, want >= 1", c.reason, got)
		}
	}
	// After a reconnect the watch resumes past the rejected values: they
	// are not counted twice.
	counts := map[string]uint64{}
	for _, r := range RejectReasons {
		counts[r] = in.Rejected(r)
	}
	restarts := in.metrics.nWatchRestarts.Load()
	srv.Restart(t)
	testenv.Eventually(t, 10*time.Second, "the watch re-created after the restart", func() bool { return in.metrics.nWatchRestarts.Load() > restarts })
	time.Sleep(500 * time.Millisecond)
	for _, r := range RejectReasons {
		if got := in.Rejected(r); got != counts[r] {
			t.Errorf("after a reconnect: %d rejected as %s, want still %d", got, r, counts[r])
		}
	}
	if r, _, ok := in.Limit("acme"); !ok || r != 5 {
		t.Fatalf("after a reconnect: acme %v/%v, want the signed throttle", r, ok)
	}
	// A limiter that starts now resyncs from the bucket as the forgers
	// left it: it applies none of it.
	late := start(t, srv.URL, nil)
	time.Sleep(300 * time.Millisecond)
	if _, _, ok := late.Limit("victim"); ok {
		t.Fatal("a fresh limiter applied a forged decision")
	}
	// The writers' signed release clears the throttle.
	if err := pub.Clear(ctx, "acme", ScopeAll, SourceManual); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Second, "the signed release applied", func() bool { _, _, ok := in.Limit("acme"); return !ok })
}

func put(kv jetstream.KeyValue, val []byte) func(string) error {
	return func(key string) error {
		_, err := kv.Put(context.Background(), key, val)
		return err
	}
}

// TestLimiterNeedsTrustedKeys: a limiter that follows the bucket refuses to
// start without a key to verify with, unless the opt-out is set; a
// local-only limiter reads no bucket and needs none.
func TestLimiterNeedsTrustedKeys(t *testing.T) {
	srv := testenv.NATS(t)
	nc := connect(t, srv.URL)
	_, err := New(DefaultConfig(), Deps{Conn: nc})
	if !errors.Is(err, ErrNoTrustedKeys) || !strings.Contains(err.Error(), "limiter.Config.TrustedKeys") || !strings.Contains(err.Error(), "limiter.Config.InsecureAcceptUnsigned") {
		t.Fatalf("got %v, want ErrNoTrustedKeys naming Config.TrustedKeys and Config.InsecureAcceptUnsigned", err)
	}
	cfg := DefaultConfig()
	cfg.InsecureAcceptUnsigned = true
	if _, err := New(cfg, Deps{Conn: nc}); err != nil {
		t.Fatalf("with the opt-out: %v", err)
	}
	if _, err := New(DefaultConfig(), Deps{}); err != nil {
		t.Fatalf("local-only: %v", err)
	}
	cfg = DefaultConfig()
	cfg.TrustedKeys = []string{"ed25519:nope", "AAAA"}
	err = cfg.Validate()
	for _, want := range []string{"limiter.Config.TrustedKeys[0]", "limiter.Config.TrustedKeys[1]"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want it to name %s", err, want)
		}
	}
}

// TestInsecureAcceptUnsigned: the opt-out applies unsigned decisions and
// deletes as limiters did before signing, but still refuses a signature
// that does not verify when keys are set.
func TestInsecureAcceptUnsigned(t *testing.T) {
	srv := testenv.NATS(t)
	newPublisher(t, srv.URL)
	in := start(t, srv.URL, func(c *Config) { c.InsecureAcceptUnsigned = true })
	kv := decisionsKV(t, srv.URL)
	if err := put(kv, marshal(t, throttle("acme", 7, 7, SourceManual, time.Hour)))("acme"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Second, "unsigned throttle applied", func() bool { r, _, ok := in.Limit("acme"); return ok && r == 7 })
	if err := put(kv, marshal(t, testSigner(t, 2).Sign("acme", throttle("acme", 1, 1, SourceManual, time.Hour))))("acme"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Second, "unknown key rejected", func() bool { return in.Rejected(RejectUnknownKey) == 1 })
	if r, _, _ := in.Limit("acme"); r != 7 {
		t.Fatalf("rate %v after a decision signed by an unknown key, want 7 kept", r)
	}
	if err := kv.Delete(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Second, "delete applied", func() bool { _, _, ok := in.Limit("acme"); return !ok })
}
