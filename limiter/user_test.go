package limiter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

func userThrottle(tenant, user string, rate float64, burst uint32) Decision {
	d := throttle(tenant, rate, burst, SourceAnomaly, time.Minute)
	d.Scope = UserScope(user)
	return d
}

// TestUserScope: a user decision applies on top of the tenant's, the
// stricter wins, and the tenant's other users are untouched.
func TestUserScope(t *testing.T) {
	l := newLocal(t, nil, Deps{})
	if err := l.Apply(userThrottle("acme", "u_heavy", 1, 3)); err != nil {
		t.Fatal(err)
	}
	if !l.HasUserDecisions("acme") || l.HasUserDecisions("beta") {
		t.Fatal("HasUserDecisions is wrong")
	}
	heavy, others := 0, 0
	for range 100 {
		if l.AllowUser("acme", "u_heavy") {
			heavy++
		}
		if l.AllowUser("acme", "u_other") {
			others++
		}
	}
	if heavy != 3 || others != 100 {
		t.Fatalf("got heavy %d, others %d allowed; want 3 (the user's burst) and 100", heavy, others)
	}
	if !l.Allow("acme") {
		t.Fatal("a user decision limited the tenant")
	}
	// The stricter wins: a tenant throttle of burst 2 under a user limit of 3.
	if err := l.Apply(throttle("beta", 1, 2, SourceManual, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := l.Apply(userThrottle("beta", "u1", 1000, 1000)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for range 10 {
		if l.AllowUser("beta", "u1") {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("got %d allowed, want the tenant's burst 2", n)
	}
	// A user rejected by its own limit takes no tokens from its tenant.
	if err := l.Apply(throttle("gamma", 1, 5, SourceManual, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := l.Apply(userThrottle("gamma", "spiky", 1, 1)); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		l.AllowUser("gamma", "spiky")
	}
	n = 0
	for range 10 {
		if l.AllowUser("gamma", "calm") {
			n++
		}
	}
	if n != 4 {
		t.Fatalf("other users got %d, want 4 (the tenant's burst 5 less the spiky user's one request)", n)
	}
	// Clear.
	c := userThrottle("acme", "u_heavy", 0, 0)
	c.Action = ActionClear
	if err := l.Apply(c); err != nil {
		t.Fatal(err)
	}
	if !l.AllowUser("acme", "u_heavy") {
		t.Fatal("cleared user still limited")
	}
}

// TestUserMiddleware: the user comes from a header or a JWT claim; only
// that user gets 429.
func TestUserMiddleware(t *testing.T) {
	l := newLocal(t, nil, Deps{})
	secret := []byte("s3cret")
	if err := l.Apply(userThrottle("acme", "alice", 1, 2)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		user func(*http.Request) string
		set  func(r *http.Request, user string)
	}{
		{"header", HeaderUser("X-User-ID"), func(r *http.Request, u string) { r.Header.Set("X-User-ID", u) }},
		{"jwt", JWTClaimUser(secret, "sub"), func(r *http.Request, u string) {
			tok, err := SignHS256(map[string]any{"sub": u, "exp": time.Now().Add(time.Hour).Unix()}, secret)
			if err != nil {
				t.Fatal(err)
			}
			r.Header.Set("Authorization", "Bearer "+tok)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := l.Apply(userThrottle("acme", "alice", 1, 2)); err != nil { // a fresh bucket
				t.Fatal(err)
			}
			mw, err := l.Middleware(MiddlewareConfig{Tenant: HeaderTenant("X-Tenant-ID"), User: c.user})
			if err != nil {
				t.Fatal(err)
			}
			h := mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			codes := map[string][]int{}
			for range 5 {
				for _, u := range []string{"alice", "bob"} {
					req := httptest.NewRequest("GET", "/", nil)
					req.Header.Set("X-Tenant-ID", "acme")
					c.set(req, u)
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					codes[u] = append(codes[u], rec.Code)
				}
			}
			for i, code := range codes["bob"] {
				if code != 200 {
					t.Fatalf("bob request %d: %d, want 200", i, code)
				}
			}
			rejected := 0
			for _, code := range codes["alice"] {
				if code == http.StatusTooManyRequests {
					rejected++
				}
			}
			if rejected < 2 {
				t.Fatalf("alice: %v, want 429 past her burst of 2", codes["alice"])
			}
		})
	}
}

// TestUserScopeOverNATS: a signed user decision published under
// <tenant>.user.<base64url(id)> reaches a limiter.
func TestUserScopeOverNATS(t *testing.T) {
	srv := testenv.NATS(t)
	pub := newPublisher(t, srv.URL)
	in := start(t, srv.URL, nil)
	d := userThrottle("acme", "user@example.com", 1, 1)
	d.Source = SourceManual
	if _, err := pub.Put(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	kv := decisionsKV(t, srv.URL)
	if _, err := kv.Get(context.Background(), "acme.user.dXNlckBleGFtcGxlLmNvbQ"); err != nil {
		t.Fatalf("the decision is not under acme.user.<base64url(id)>: %v", err)
	}
	testenv.Eventually(t, 5*time.Second, "user decision applied", func() bool { return in.HasUserDecisions("acme") })
	n := 0
	for range 20 {
		if in.AllowUser("acme", "user@example.com") {
			n++
		}
		if !in.AllowUser("acme", "other") {
			t.Fatal("another user of the tenant was rejected")
		}
	}
	if n != 1 {
		t.Fatalf("got %d allowed, want 1", n)
	}
}
