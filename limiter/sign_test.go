package limiter

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSignatureCoversEveryField: changing any field of a signed decision,
// or the key it is stored under, breaks its signature.
func TestSignatureCoversEveryField(t *testing.T) {
	s := testSigner(t, 1)
	v := NewVerifier([]ed25519.PublicKey{s.PublicKey()}, DefaultMaxManualTTL, false)
	now := time.Now()
	d := validDecision()
	d.IssuedAt, d.ExpiresAt = now, now.Add(time.Minute)
	signed := s.Sign("acme", d)
	if _, err := v.Check("acme", marshal(t, signed), now); err != nil {
		t.Fatalf("the signed decision: %v", err)
	}
	cases := []struct {
		name string
		key  string
		mod  func(*Decision)
	}{
		{"key", "other", func(d *Decision) { d.TenantID = "other" }},
		{"tenant_id and key", "acme.route.eA", func(d *Decision) { d.Scope = "route:x" }},
		{"action", "acme", func(d *Decision) { d.Action = ActionShed }},
		{"rate_per_sec", "acme", func(d *Decision) { d.RatePerSec = 10.5 }},
		{"burst", "acme", func(d *Decision) { d.Burst = 21 }},
		{"issued_at", "acme", func(d *Decision) { d.IssuedAt = d.IssuedAt.Add(-time.Nanosecond) }},
		{"expires_at", "acme", func(d *Decision) { d.ExpiresAt = d.ExpiresAt.Add(time.Second) }},
		{"reason", "acme", func(d *Decision) { d.Reason = "spike " }},
		{"source", "acme", func(d *Decision) { d.Source = SourceManual }},
		{"anomaly_id", "acme", func(d *Decision) { d.AnomalyID = "abd" }},
		{"key_id", "acme", func(d *Decision) { d.KeyID = KeyID(testSigner(t, 2).PublicKey()) }},
		{"sig", "acme", func(d *Decision) { d.Sig = strings.Repeat("A", 86) + "==" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := signed
			c.mod(&m)
			_, err := v.Check(c.key, marshal(t, m), now)
			if got := RejectReason(err); got != RejectBadSignature && got != RejectUnknownKey {
				t.Fatalf("got %v, want bad_signature or unknown_key", err)
			}
		})
	}
	// The JSON form does not matter, only the values: another time zone
	// and key order still verify.
	loc := time.FixedZone("x", 5*3600)
	m := signed
	m.IssuedAt, m.ExpiresAt = m.IssuedAt.In(loc), m.ExpiresAt.In(loc)
	if _, err := v.Check("acme", marshal(t, m), now); err != nil {
		t.Fatalf("same decision in another zone: %v", err)
	}
}

func TestCanonicalBytesForm(t *testing.T) {
	d := validDecision()
	d.KeyID = "k"
	got := string(CanonicalBytes("acme", d))
	want := "tenantguard/decision/v1\nkey=4:acme\ntenant_id=4:acme\nscope=3:all\naction=8:throttle\n" +
		"rate_per_sec=2:10\nburst=2:20\nissued_at=20:2026-11-25T19:00:00Z\nexpires_at=20:2026-11-25T19:01:00Z\n" +
		"reason=5:spike\nsource=7:anomaly\nanomaly_id=3:abc\nkey_id=1:k\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestKeysRoundTrip(t *testing.T) {
	privPEM, pub, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "k.pem")
	if err := os.WriteFile(path, privPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := LoadSigner(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := FormatPublicKey(s.PublicKey()); got != pub {
		t.Fatalf("public key of the loaded key %s, want %s", got, pub)
	}
	pk, err := ParsePublicKey(pub)
	if err != nil || !bytes.Equal(pk, s.PublicKey()) {
		t.Fatalf("ParsePublicKey(%q) = %x, %v", pub, pk, err)
	}
	// A key that openssl wrote (`openssl genpkey -algorithm ed25519`).
	const openssl = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHQYlL1ObnhrCpr8gIysgnQbrxZK9Ar1mQldS0pdHdDx\n-----END PRIVATE KEY-----\n"
	if _, err := ParsePrivateKey([]byte(openssl)); err != nil {
		t.Fatalf("openssl key: %v", err)
	}
	for _, bad := range []string{"", "ed25519:", "ed25519:AAAA", "rsa:" + pub[8:], pub + "="} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) accepted", bad)
		}
	}
	if _, err := ParsePrivateKey([]byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")); err == nil {
		t.Error("a public key was accepted as a private key")
	}
}

// TestVerifierExpiryCap: the cap holds from issued_at and from now.
func TestVerifierExpiryCap(t *testing.T) {
	s := testSigner(t, 1)
	v := NewVerifier([]ed25519.PublicKey{s.PublicKey()}, time.Hour, false)
	now := time.Now().UTC().Truncate(time.Second)
	for _, c := range []struct {
		name            string
		issued, expires time.Time
		want            string
	}{
		{"within", now, now.Add(time.Hour), ""},
		{"too long", now, now.Add(time.Hour + time.Second), RejectExpiryTooFar},
		{"issued in the future", now.Add(24 * time.Hour), now.Add(25 * time.Hour), RejectExpiryTooFar},
		{"past the DateTime range", now, time.Date(2107, 1, 1, 0, 0, 0, 0, time.UTC), RejectInvalid},
	} {
		d := throttle("acme", 1, 1, SourceManual, time.Minute)
		d.IssuedAt, d.ExpiresAt = c.issued, c.expires
		_, err := v.Check("acme", marshal(t, s.Sign("acme", d)), now)
		if got := RejectReason(err); got != c.want {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
}

// FuzzDecisionVerify drives arbitrary values through the verifier that
// limiters use: it must never panic, and must never accept a decision that
// is unsigned, invalid, stored under another key, or signed by a key it
// does not trust.
func FuzzDecisionVerify(f *testing.F) {
	s := testSigner(f, 1)
	now := time.Date(2026, 11, 25, 19, 0, 30, 0, time.UTC)
	d := validDecision()
	signed, _ := json.Marshal(s.Sign("acme", d))
	f.Add("acme", signed)
	unsigned, _ := json.Marshal(d)
	f.Add("acme", unsigned)
	f.Add("acme", []byte(`{"action":"shed","source":"manual","expires_at":"2105-01-01T00:00:00Z"}`))
	f.Add("acme.route.eA", signed)
	v := NewVerifier([]ed25519.PublicKey{s.PublicKey()}, DefaultMaxManualTTL, false)
	f.Fuzz(func(t *testing.T, key string, data []byte) {
		got, err := v.Check(key, data, now)
		if err != nil {
			if RejectReason(err) == "" {
				t.Fatalf("error without a reject reason: %v", err)
			}
			return
		}
		if got.Sig == "" || got.KeyID != s.KeyID() {
			t.Fatalf("accepted a decision not signed by the trusted key: %+v", got)
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("accepted an invalid decision: %v", err)
		}
		if k, err := got.Key(); err != nil || k != key {
			t.Fatalf("accepted a decision for key %q stored under %q", k, key)
		}
		if !verifies(s.PublicKey(), key, got) {
			t.Fatalf("accepted a decision whose signature does not verify: %+v", got)
		}
	})
}

func verifies(pub ed25519.PublicKey, key string, d Decision) bool {
	sig, err := base64.StdEncoding.DecodeString(d.Sig)
	if err != nil {
		return false
	}
	return ed25519.Verify(pub, CanonicalBytes(key, d), sig)
}
