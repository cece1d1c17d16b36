package limiter

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

func shadowThrottle(tenant string, rate float64, burst uint32) Decision {
	d := throttle(tenant, rate, burst, SourceManual, time.Minute)
	d.Mode = ModeShadow
	return d
}

// TestShadowModeJSON: an enforced decision has no mode field, so older
// limiters read it; a shadow one carries "mode":"shadow", which an older
// limiter's strict decoder refuses, and the signature covers it.
func TestShadowModeJSON(t *testing.T) {
	enforce := validDecision()
	b, err := json.Marshal(enforce)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(`"mode"`)) {
		t.Fatalf("an enforced decision carries mode: %s", b)
	}
	shadow := validDecision()
	shadow.Mode = ModeShadow
	b, err = json.Marshal(shadow)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"mode":"shadow"`)) {
		t.Fatalf("got %s, want \"mode\":\"shadow\"", b)
	}
	if d, err := DecodeDecision(b); err != nil || !d.Shadow() {
		t.Fatalf("round trip: got %+v, %v; want a shadow decision", d, err)
	}
	// A limiter from before the field: the same strict decoder without it.
	type olderDecision struct {
		TenantID   string    `json:"tenant_id"`
		Scope      string    `json:"scope"`
		Action     Action    `json:"action"`
		RatePerSec float64   `json:"rate_per_sec"`
		Burst      uint32    `json:"burst"`
		IssuedAt   time.Time `json:"issued_at"`
		ExpiresAt  time.Time `json:"expires_at"`
		Reason     string    `json:"reason"`
		Source     Source    `json:"source"`
		AnomalyID  string    `json:"anomaly_id"`
		KeyID      string    `json:"key_id,omitempty"`
		Sig        string    `json:"sig,omitempty"`
	}
	older := func(b []byte) error {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		var d olderDecision
		return dec.Decode(&d)
	}
	if err := older(b); err == nil {
		t.Fatal("an older limiter would read a shadow decision and enforce it")
	}
	eb, _ := json.Marshal(enforce)
	if err := older(eb); err != nil {
		t.Fatalf("an older limiter cannot read an enforced decision: %v", err)
	}
	for _, m := range []Mode{"", ModeEnforce, ModeShadow} {
		d := validDecision()
		d.Mode = m
		if err := d.Validate(); err != nil {
			t.Errorf("mode %q: %v", m, err)
		}
	}
	bad := validDecision()
	bad.Mode = "dry-run"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "mode:") {
		t.Fatalf("got %v, want an error naming mode", err)
	}
}

// TestShadowModeSigned: the signature covers mode, so flipping a signed
// shadow decision to enforce (or dropping the field) fails verification,
// and an enforced decision signs the same bytes as before the field.
func TestShadowModeSigned(t *testing.T) {
	s := testSigner(t, 1)
	v := NewVerifier([]ed25519.PublicKey{s.PublicKey()}, 0, false)
	d := validDecision()
	d.IssuedAt, d.ExpiresAt = time.Now().UTC(), time.Now().UTC().Add(time.Minute)
	key, _ := d.Key()
	if bytes.Contains(CanonicalBytes(key, d), []byte("mode=")) {
		t.Fatal("an enforced decision's canonical form names mode")
	}
	d.Mode = ModeShadow
	signed := s.Sign(key, d)
	if !bytes.HasSuffix(CanonicalBytes(key, signed), []byte("mode=6:shadow\n")) {
		t.Fatalf("canonical form lacks the mode line:\n%s", CanonicalBytes(key, signed))
	}
	check := func(d Decision) error {
		b, _ := json.Marshal(d)
		_, err := v.Check(key, b, time.Now())
		return err
	}
	if err := check(signed); err != nil {
		t.Fatalf("signed shadow decision: %v", err)
	}
	for _, m := range []Mode{"", ModeEnforce} {
		forged := signed
		forged.Mode = m
		if err := check(forged); RejectReason(err) != RejectBadSignature {
			t.Errorf("mode %q on a shadow signature: got %v, want %s", m, err, RejectBadSignature)
		}
	}
}

// TestShadowAllowsAndCounts: a shadow throttle rejects nothing, counts what
// it would have rejected, and leaves the default limit in force.
func TestShadowAllowsAndCounts(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	l := newLocal(t, func(c *Config) { c.MaxTenantSeries = 1 }, Deps{Registerer: reg})
	if err := l.Apply(shadowThrottle("acme", 1, 5)); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i := range 100 {
		if !l.AllowN("acme", now, 1) {
			t.Fatalf("request %d rejected under a shadow decision", i)
		}
	}
	if got := testenv.MetricValue(t, reg, "tenantguard_limiter_shadow_rejected_total", "tenant", "acme"); got != 95 {
		t.Fatalf("shadow_rejected{acme} = %v, want 95 (100 requests, burst 5)", got)
	}
	if got := testenv.MetricValue(t, reg, "tenantguard_limiter_throttled_total", "tenant", "acme"); got != 0 {
		t.Fatalf("throttled{acme} = %v, want 0", got)
	}
	if err := l.Wait(context.Background(), "acme"); err != nil {
		t.Fatalf("Wait under a shadow decision: %v", err)
	}
	if _, _, limited := l.Limit("acme"); limited {
		t.Fatal("Limit reports a shadow decision as the governing limit")
	}
	// The label is capped like every tenant label.
	if err := l.Apply(shadowThrottle("beta", 1, 1)); err != nil {
		t.Fatal(err)
	}
	l.AllowN("beta", now, 1)
	l.AllowN("beta", now, 1)
	if got := testenv.MetricValue(t, reg, "tenantguard_limiter_shadow_rejected_total", "tenant", overflowLabel); got != 1 {
		t.Fatalf("shadow_rejected{__overflow__} = %v, want 1", got)
	}
	// A shadow shed rejects nothing either.
	shed := shadowThrottle("gamma", 0, 0)
	shed.Action = ActionShed
	if err := l.Apply(shed); err != nil {
		t.Fatal(err)
	}
	if !l.Allow("gamma") || l.Wait(context.Background(), "gamma") != nil {
		t.Fatal("a shadow shed rejected a request")
	}

	// With a plan default, the default still limits a shadowed tenant.
	d := newLocal(t, func(c *Config) { c.DefaultRatePerSec, c.DefaultBurst = 1, 2 }, Deps{})
	if err := d.Apply(shadowThrottle("acme", 1000, 1000)); err != nil {
		t.Fatal(err)
	}
	allowed := 0
	for range 10 {
		if d.AllowN("acme", now, 1) {
			allowed++
		}
	}
	if allowed != 2 {
		t.Fatalf("got %d allowed, want the default burst 2: a shadow decision lifted the default limit", allowed)
	}
}

// TestShadowCircuit: a shadow open_circuit lets calls through and counts them.
func TestShadowCircuit(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	l := newLocal(t, nil, Deps{Registerer: reg})
	now := time.Now()
	d := Decision{TenantID: "acme", Scope: IntegrationScope("stripe"), Action: ActionOpenCircuit,
		IssuedAt: now, ExpiresAt: now.Add(time.Minute), Source: SourceManual, Mode: ModeShadow}
	if err := l.Apply(d); err != nil {
		t.Fatal(err)
	}
	if err := l.Breakers().Allow("acme", "stripe"); err != nil {
		t.Fatalf("shadow circuit: %v, want the call through", err)
	}
	if got := testenv.MetricValue(t, reg, "tenantguard_limiter_shadow_rejected_total", "tenant", "acme"); got != 1 {
		t.Fatalf("shadow_rejected{acme} = %v, want 1", got)
	}
}

// TestShadowMiddleware: no 429 and no RateLimit headers for a shadowed
// tenant; a shadow route decision does not loosen an enforced tenant limit.
func TestShadowMiddleware(t *testing.T) {
	l := newLocal(t, nil, Deps{})
	mw, err := l.Middleware(MiddlewareConfig{Tenant: HeaderTenant("X-Tenant-ID"),
		Route: func(r *http.Request) string { return r.URL.Path }})
	if err != nil {
		t.Fatal(err)
	}
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	get := func(tenant string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/v1/x", nil)
		req.Header.Set("X-Tenant-ID", tenant)
		h.ServeHTTP(rec, req)
		return rec
	}
	if err := l.Apply(shadowThrottle("acme", 1, 1)); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		rec := get("acme")
		if rec.Code != http.StatusOK {
			t.Fatalf("request %d: got %d, want 200 under a shadow decision", i, rec.Code)
		}
		if v := rec.Header().Get("RateLimit-Limit"); v != "" {
			t.Fatalf("RateLimit-Limit %q on a shadowed tenant, want none", v)
		}
	}
	if err := l.Apply(throttle("beta", 1, 1, SourceManual, time.Minute)); err != nil {
		t.Fatal(err)
	}
	route := shadowThrottle("beta", 1000, 1000)
	route.Scope = RouteScope("/v1/x")
	if err := l.Apply(route); err != nil {
		t.Fatal(err)
	}
	if rec := get("beta"); rec.Code != http.StatusOK {
		t.Fatalf("first request: %d", rec.Code)
	}
	if rec := get("beta"); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("second request: got %d, want 429 from the enforced tenant limit", rec.Code)
	}
}

// TestShadowOverNATS: a signed shadow decision published to the bucket
// reaches a limiter that then rejects nothing and counts; switching it to
// enforce rejects.
func TestShadowOverNATS(t *testing.T) {
	srv := testenv.NATS(t)
	pub := newPublisher(t, srv.URL)
	reg := prometheus.NewPedanticRegistry()
	in := startWith(t, srv.URL, nil, reg)
	ctx := context.Background()
	if _, err := pub.Put(ctx, shadowThrottle("acme", 1, 2)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "shadow decision applied", func() bool {
		d, ok := in.Decision("acme", ScopeAll)
		return ok && d.Shadow()
	})
	for i := range 50 {
		if !in.Allow("acme") {
			t.Fatalf("request %d rejected under a shadow decision", i)
		}
	}
	if got := testenv.MetricValue(t, reg, "tenantguard_limiter_shadow_rejected_total", "tenant", "acme"); got < 45 {
		t.Fatalf("shadow_rejected{acme} = %v, want >= 45", got)
	}
	if _, err := pub.Put(ctx, throttle("acme", 1, 2, SourceManual, time.Minute)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "enforced decision applied", func() bool {
		d, ok := in.Decision("acme", ScopeAll)
		return ok && !d.Shadow()
	})
	rejected := 0
	for range 50 {
		if !in.Allow("acme") {
			rejected++
		}
	}
	if rejected < 45 {
		t.Fatalf("got %d rejected once enforced, want >= 45", rejected)
	}
}
