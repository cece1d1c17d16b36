package limiter

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func validDecision() Decision {
	now := time.Date(2026, 11, 25, 19, 0, 0, 0, time.UTC)
	return Decision{TenantID: "acme", Scope: ScopeAll, Action: ActionThrottle, RatePerSec: 10, Burst: 20,
		IssuedAt: now, ExpiresAt: now.Add(time.Minute), Reason: "spike", Source: SourceAnomaly, AnomalyID: "abc"}
}

func TestDecisionValidate(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Decision)
		want string // substring of the error, "" for valid
	}{
		{"valid", func(*Decision) {}, ""},
		{"route scope", func(d *Decision) { d.Scope = "route:GET /v1/invoices" }, ""},
		{"circuit", func(d *Decision) { d.Scope = "integration:stripe"; d.Action = ActionOpenCircuit }, ""},
		{"bad tenant", func(d *Decision) { d.TenantID = "a.b" }, "tenant_id"},
		{"bad scope", func(d *Decision) { d.Scope = "route:" }, "scope"},
		{"unknown scope", func(d *Decision) { d.Scope = "group:1" }, "scope"},
		{"circuit on route", func(d *Decision) { d.Scope = "route:x"; d.Action = ActionOpenCircuit }, "open_circuit"},
		{"bad action", func(d *Decision) { d.Action = "ban" }, "action"},
		{"negative rate", func(d *Decision) { d.RatePerSec = -1 }, "rate_per_sec"},
		{"no expiry", func(d *Decision) { d.ExpiresAt = time.Time{} }, "expires_at"},
		{"expiry before issue", func(d *Decision) { d.ExpiresAt = d.IssuedAt.Add(-time.Second) }, "expires_at"},
		{"bad source", func(d *Decision) { d.Source = "robot" }, "source"},
		{"control char", func(d *Decision) { d.Scope = "route:a\nb" }, "control"},
		{"C1 control in scope", func(d *Decision) { d.Scope = "route:a\u009bb" }, "control"},
		{"ANSI escape in reason", func(d *Decision) { d.Reason = "ok \x1b[2J\x1b[31mred" }, "reason: control character U+001B at byte 3"},
		{"newline in reason", func(d *Decision) { d.Reason = "a\nb" }, "reason: control character U+000A"},
		{"C1 CSI in reason", func(d *Decision) { d.Reason = "a\u009b31m" }, "reason: control character U+009B"},
		{"DEL in anomaly_id", func(d *Decision) { d.AnomalyID = "a\x7f" }, "anomaly_id: control character"},
		{"unicode reason", func(d *Decision) { d.Reason = "Überlast – 東京 🚦" }, ""},
		{"expires at the last DateTime second", func(d *Decision) { d.ExpiresAt = MaxTimestamp }, ""},
		{"expires past DateTime", func(d *Decision) { d.ExpiresAt = MaxTimestamp.Add(time.Second) }, "expires_at: 2106-02-07T06:28:16Z is outside"},
		{"expires in 2319", func(d *Decision) { d.ExpiresAt = d.IssuedAt.Add(2562047 * time.Hour) }, "expires_at: 2319"},
		{"issued before 1970", func(d *Decision) { d.IssuedAt = time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC) }, "issued_at: 1969-12-31T00:00:00Z is outside"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := validDecision()
			c.mod(&d)
			err := d.Validate()
			if c.want == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrInvalidDecision) {
				t.Fatalf("got %v, want an ErrInvalidDecision mentioning %q", err, c.want)
			}
		})
	}
}

func TestDecisionJSONFields(t *testing.T) {
	b, err := json.Marshal(validDecision())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"tenant_id", "scope", "action", "rate_per_sec", "burst", "issued_at", "expires_at", "reason", "source", "anomaly_id"} {
		if _, ok := m[f]; !ok {
			t.Errorf("JSON lacks field %q: %s", f, b)
		}
	}
	if len(m) != 10 {
		t.Errorf("got %d fields, want 10: %s", len(m), b)
	}
	d, err := DecodeDecision(b)
	if err != nil || d != validDecision() {
		t.Fatalf("round trip: got %+v, %v", d, err)
	}
	if _, err := DecodeDecision([]byte(`{"tenant_id":"acme","bogus":1}`)); err == nil {
		t.Fatal("unknown field accepted")
	}
}

func TestKeyRoundTrip(t *testing.T) {
	cases := []struct{ tenant, scope, key string }{
		{"acme", "all", "acme"},
		{"acme", "route:GET /v1/invoices", "acme.route.R0VUIC92MS9pbnZvaWNlcw"},
		{"t-1", "integration:stripe", "t-1.integration.c3RyaXBl"},
		{"acme", "user:u_42", "acme.user.dV80Mg"},
		{"acme", "user:alice@example.com", "acme.user.YWxpY2VAZXhhbXBsZS5jb20"},
		{"t_2", "route:/a.b/*", ""},
	}
	for _, c := range cases {
		key, err := Key(c.tenant, c.scope)
		if err != nil {
			t.Fatalf("Key(%q, %q): %v", c.tenant, c.scope, err)
		}
		if c.key != "" && key != c.key {
			t.Errorf("Key(%q, %q) = %q, want %q", c.tenant, c.scope, key, c.key)
		}
		if !kvSafe(key) {
			t.Errorf("key %q is not KV-safe", key)
		}
		tenant, scope, err := ParseKey(key)
		if err != nil || tenant != c.tenant || scope != c.scope {
			t.Errorf("ParseKey(%q) = %q, %q, %v; want %q, %q", key, tenant, scope, err, c.tenant, c.scope)
		}
	}
	for _, bad := range []string{"", ".x", "acme.", "acme.route", "acme.users.eA", "acme.user.", "acme.route.!!", "acme.route."} {
		if _, _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
}

// kvSafe mirrors the nats.go KV key rule: [-/_=.a-zA-Z0-9]+, no leading or
// trailing dot.
func kvSafe(k string) bool {
	if k == "" || k[0] == '.' || k[len(k)-1] == '.' {
		return false
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-/_=.", c)) {
			return false
		}
	}
	return true
}

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"acme", "acme.route.R0VUIC92MS9pbnZvaWNlcw", "t.integration.c3RyaXBl", "a..b", "a.route.=="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		tenant, scope, err := ParseKey(key)
		if err != nil {
			return
		}
		again, err := Key(tenant, scope)
		if err != nil || again != key {
			t.Fatalf("ParseKey(%q) = %q, %q but Key gives %q, %v", key, tenant, scope, again, err)
		}
		if !kvSafe(again) {
			t.Fatalf("key %q not KV-safe", again)
		}
	})
}

func FuzzDecodeDecision(f *testing.F) {
	b, _ := json.Marshal(validDecision())
	f.Add(b)
	f.Add([]byte(`{"tenant_id":"a","scope":"integration:x","action":"open_circuit","issued_at":"2026-01-01T00:00:00Z","expires_at":"2026-01-01T00:01:00Z","source":"manual"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := DecodeDecision(data)
		if err != nil {
			return
		}
		if err := d.Validate(); err != nil {
			t.Fatalf("decoded decision fails Validate: %v", err)
		}
		if _, err := d.Key(); err != nil {
			t.Fatalf("decoded decision has no key: %v", err)
		}
	})
}
