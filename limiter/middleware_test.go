package limiter

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMiddleware(t *testing.T) {
	l := newLocal(t, nil, Deps{})
	secret := []byte("s3cret")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/invoices", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	mux.HandleFunc("GET /v1/pay", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	mw, err := l.Middleware(MiddlewareConfig{
		Tenant: JWTClaimTenant(secret, "tenant"),
		Integration: func(r *http.Request) string {
			if strings.HasPrefix(r.URL.Path, "/v1/pay") {
				return "stripe"
			}
			return ""
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// ServeMux sets r.Pattern before the middleware runs when it wraps
	// each handler; here it wraps the mux, so route scopes use the path.
	srv := httptest.NewServer(mw(mux))
	defer srv.Close()
	token := func(tenant string, exp time.Time) string {
		tok, err := SignHS256(map[string]any{"tenant": tenant, "exp": exp.Unix()}, secret)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	get := func(path, auth string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	hour := time.Now().Add(time.Hour)
	if r := get("/v1/invoices", ""); r.StatusCode != 401 {
		t.Fatalf("no token: %d, want 401", r.StatusCode)
	}
	if r := get("/v1/invoices", token("acme", time.Now().Add(-time.Hour))); r.StatusCode != 401 {
		t.Fatalf("expired token: %d, want 401", r.StatusCode)
	}
	if r := get("/v1/invoices", token("acme", hour)+"x"); r.StatusCode != 401 {
		t.Fatalf("bad signature: %d, want 401", r.StatusCode)
	}
	r := get("/v1/invoices", token("acme", hour))
	if r.StatusCode != 200 || r.Header.Get("RateLimit-Limit") != "" {
		t.Fatalf("unlimited tenant: %d, RateLimit-Limit %q; want 200 and no header", r.StatusCode, r.Header.Get("RateLimit-Limit"))
	}
	if err := l.Apply(throttle("acme", 0.5, 3, SourceManual, time.Minute)); err != nil {
		t.Fatal(err)
	}
	tok := token("acme", hour)
	for i := range 3 {
		r := get("/v1/invoices", tok)
		if r.StatusCode != 200 {
			t.Fatalf("request %d within burst: %d", i, r.StatusCode)
		}
		if got, want := r.Header.Get("RateLimit-Remaining"), strconv.Itoa(2-i); got != want {
			t.Fatalf("request %d: RateLimit-Remaining %q, want %q", i, got, want)
		}
		if r.Header.Get("RateLimit-Limit") != "3" {
			t.Fatalf("RateLimit-Limit %q, want 3", r.Header.Get("RateLimit-Limit"))
		}
	}
	r = get("/v1/invoices", tok)
	if r.StatusCode != 429 {
		t.Fatalf("over the limit: %d, want 429", r.StatusCode)
	}
	if ra, _ := strconv.Atoi(r.Header.Get("Retry-After")); ra < 1 || ra > 2 {
		t.Fatalf("Retry-After %q, want 1..2 s at 0.5/s", r.Header.Get("Retry-After"))
	}
	if rs, _ := strconv.Atoi(r.Header.Get("RateLimit-Reset")); rs < 5 || rs > 6 {
		t.Fatalf("RateLimit-Reset %q, want ~6 s to refill 3 tokens at 0.5/s", r.Header.Get("RateLimit-Reset"))
	}
	if r := get("/v1/invoices", token("other", hour)); r.StatusCode != 200 {
		t.Fatalf("other tenant: %d, want 200", r.StatusCode)
	}
	// Circuit: an open_circuit decision gives 503 with Retry-After.
	now := time.Now()
	if err := l.Apply(Decision{TenantID: "other", Scope: IntegrationScope("stripe"), Action: ActionOpenCircuit,
		IssuedAt: now, ExpiresAt: now.Add(30 * time.Second), Source: SourceManual}); err != nil {
		t.Fatal(err)
	}
	r = get("/v1/pay", token("other", hour))
	if r.StatusCode != 503 || r.Header.Get("Retry-After") == "" {
		t.Fatalf("open circuit: %d Retry-After %q, want 503 with Retry-After", r.StatusCode, r.Header.Get("Retry-After"))
	}
	// Local breaker: 502s from the handler open it for tenant "third".
	tok3 := token("third", hour)
	for range 20 {
		get("/v1/pay", tok3)
	}
	if r := get("/v1/pay", tok3); r.StatusCode != 503 {
		t.Fatalf("after 20 upstream failures: %d, want 503", r.StatusCode)
	}
	if r := get("/v1/invoices", tok3); r.StatusCode != 200 {
		t.Fatalf("other route of the same tenant: %d, want 200", r.StatusCode)
	}
}

func TestMiddlewareHeaderTenantAndShed(t *testing.T) {
	l := newLocal(t, nil, Deps{})
	mw, err := l.Middleware(MiddlewareConfig{Tenant: HeaderTenant("X-Tenant-ID"), AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	h := mw(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	do := func(tenant string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/", nil)
		if tenant != "" {
			req.Header.Set("X-Tenant-ID", tenant)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if c := do("").Code; c != 200 {
		t.Fatalf("anonymous allowed: %d, want 200", c)
	}
	if c := do("bad tenant!").Code; c != 401 {
		t.Fatalf("invalid tenant header: %d, want 401", c)
	}
	d := throttle("acme", 0, 0, SourceManual, 90*time.Second)
	d.Action = ActionShed
	if err := l.Apply(d); err != nil {
		t.Fatal(err)
	}
	rec := do("acme")
	if rec.Code != 429 {
		t.Fatalf("shed: %d, want 429", rec.Code)
	}
	if ra, _ := strconv.Atoi(rec.Header().Get("Retry-After")); ra < 89 || ra > 90 {
		t.Fatalf("shed Retry-After %q, want ~90", rec.Header().Get("Retry-After"))
	}
}

func TestRouteScope(t *testing.T) {
	l := newLocal(t, nil, Deps{})
	d := throttle("acme", 0.001, 1, SourceManual, time.Minute)
	d.Scope = RouteScope("GET /v1/export")
	if err := l.Apply(d); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if r := l.Check("acme", "GET /v1/export", now); !r.Allowed || !r.Limited {
		t.Fatalf("first: %+v, want allowed and limited", r)
	}
	if r := l.Check("acme", "GET /v1/export", now); r.Allowed {
		t.Fatalf("second: %+v, want rejected by the route scope", r)
	}
	if r := l.Check("acme", "GET /v1/other", now); !r.Allowed {
		t.Fatalf("other route: %+v, want allowed", r)
	}
	if !l.AllowN("acme", now, 1) {
		t.Fatal("route scope limited the whole tenant")
	}
}
