package meter_test

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/meter"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/limiter"
)

func testConfig() meter.Config {
	cfg := meter.DefaultConfig()
	cfg.Service = "invoices-api"
	cfg.HTTP.Tenant = limiter.HeaderTenant("X-Tenant-ID")
	cfg.HTTP.User = func(r *http.Request) string { return r.Header.Get("X-User-ID") }
	return cfg
}

func do(t *testing.T, method, url, tenant, user, body string) *http.Response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if tenant != "" {
		req.Header.Set("X-Tenant-ID", tenant)
	}
	if user != "" {
		req.Header.Set("X-User-ID", user)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// TestRequestsArriveAsEvents: requests through the middleware are stored
// in ClickHouse with their tenant, user, route template (never the raw
// path), status, latency and byte counts; the handler's outbound call
// carries the same tenant through the context.
func TestRequestsArriveAsEvents(t *testing.T) {
	r := newRig(t)
	m := r.meter(t, testConfig(), nil)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer upstream.Close()
	client := &http.Client{Transport: m.Transport("mailer", nil)}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/invoices/{id}", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		io.WriteString(w, "invoice "+r.PathValue("id"))
	})
	mux.HandleFunc("POST /v1/invoices", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		req, _ := http.NewRequestWithContext(r.Context(), "POST", upstream.URL, nil)
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		resp.Body.Close()
		w.WriteHeader(http.StatusCreated)
		w.Write(b)
	})
	mux.HandleFunc("GET /v1/broken", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	})
	srv := httptest.NewServer(m.Handler(mux))
	defer srv.Close()

	for i := range 3 {
		if resp := do(t, "GET", srv.URL+"/v1/invoices/"+strconv.Itoa(1000+i), "acme", "u_42", ""); resp.StatusCode != 200 {
			t.Fatalf("GET: %d", resp.StatusCode)
		}
	}
	if resp := do(t, "POST", srv.URL+"/v1/invoices", "acme", "u_7", `{"amount":"12.50"}`); resp.StatusCode != 201 {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
	do(t, "GET", srv.URL+"/v1/broken", "globex", "", "")
	if resp := do(t, "GET", srv.URL+"/v1/invoices/1", "", "", ""); resp.StatusCode != 401 {
		t.Fatalf("no tenant: %d, want 401", resp.StatusCode)
	}

	acme := r.stored(t, "acme", event.KindAPIRequest, 4)
	gets, posts := 0, 0
	for _, e := range acme {
		if e.Service != "invoices-api" {
			t.Errorf("service %q, want invoices-api", e.Service)
		}
		switch e.Route {
		case "GET /v1/invoices/{id}":
			gets++
			if e.Status != 200 || e.User != "u_42" || e.Error {
				t.Errorf("GET event %+v, want status 200, user u_42, no error", e)
			}
			if e.LatencyMs < 20 || e.LatencyMs > 2000 {
				t.Errorf("GET latency %.2f ms, want >= 20 (the handler sleeps 20 ms)", e.LatencyMs)
			}
			if e.Attrs["response_bytes"] != "12" || e.Attrs["request_bytes"] != "0" {
				t.Errorf("GET attrs %v, want response_bytes 12, request_bytes 0", e.Attrs)
			}
		case "POST /v1/invoices":
			posts++
			if e.Status != 201 || e.User != "u_7" {
				t.Errorf("POST event %+v, want 201 by u_7", e)
			}
			if e.Attrs["request_bytes"] != "18" || e.Attrs["response_bytes"] != "18" {
				t.Errorf("POST attrs %v, want 18 bytes each way", e.Attrs)
			}
		default:
			t.Errorf("route %q: want a ServeMux pattern, never the raw path", e.Route)
		}
	}
	if gets != 3 || posts != 1 {
		t.Fatalf("got %d GET and %d POST events, want 3 and 1", gets, posts)
	}
	g := r.stored(t, "globex", event.KindAPIRequest, 1)
	if e := g[0]; e.Route != "GET /v1/broken" || e.Status != 500 || !e.Error {
		t.Fatalf("globex event %+v, want GET /v1/broken, 500, error", e)
	}
	calls := r.stored(t, "acme", event.KindWebhookCall, 1)
	if c := calls[0]; c.User != "u_7" || c.Route != "mailer" || c.Attrs["integration"] != "mailer" || c.Status != 200 {
		t.Fatalf("outbound call %+v: want acme/u_7 from the request's context, integration mailer, 200", c)
	}
}

// TestThrottledTenantIsRejectedAndMetered: a throttle decision pushed
// through the KV bucket turns the tenant's excess into 429s with
// Retry-After; every rejected request is still stored, marked rejected.
// Another tenant is untouched.
func TestThrottledTenantIsRejectedAndMetered(t *testing.T) {
	r := newRig(t)
	lim := r.limiter(t, nil)
	m := r.meter(t, testConfig(), lim)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/reports/{id}", func(w http.ResponseWriter, r *http.Request) {})
	srv := httptest.NewServer(m.Handler(mux))
	defer srv.Close()

	now := time.Now()
	if _, err := r.publisher(t).Put(context.Background(), limiter.Decision{TenantID: "noisy", Scope: limiter.ScopeAll,
		Action: limiter.ActionThrottle, RatePerSec: 0.1, Burst: 3, IssuedAt: now, ExpiresAt: now.Add(time.Minute),
		Reason: "test", Source: limiter.SourceManual}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the limiter applies the throttle", func() bool {
		_, _, ok := lim.Limit("noisy")
		return ok
	})
	codes := map[int]int{}
	for i := range 10 {
		resp := do(t, "GET", srv.URL+"/v1/reports/"+strconv.Itoa(i), "noisy", "", "")
		codes[resp.StatusCode]++
		if resp.StatusCode == 429 {
			if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 1 {
				t.Fatalf("429 with Retry-After %q", resp.Header.Get("Retry-After"))
			}
		}
		if got := resp.Header.Get("RateLimit-Limit"); got != "3" {
			t.Fatalf("RateLimit-Limit %q, want 3", got)
		}
	}
	if codes[200] != 3 || codes[429] != 7 {
		t.Fatalf("status counts %v, want 3 x 200 (the burst) and 7 x 429", codes)
	}
	if resp := do(t, "GET", srv.URL+"/v1/reports/1", "quiet", "", ""); resp.StatusCode != 200 {
		t.Fatalf("quiet tenant: %d, want 200", resp.StatusCode)
	}
	evs := r.stored(t, "noisy", event.KindAPIRequest, 10)
	rejected := 0
	for _, e := range evs {
		if e.Route != "GET /v1/reports/{id}" {
			t.Errorf("route %q, want the pattern, also for rejected requests", e.Route)
		}
		if e.Status == 429 {
			rejected++
			if e.Attrs["rejected"] != "throttled" || e.Error {
				t.Errorf("rejected event %+v: want attrs.rejected=throttled and no error flag", e)
			}
		}
	}
	if len(evs) != 10 || rejected != 7 {
		t.Fatalf("stored %d events, %d rejected; want 10 and 7", len(evs), rejected)
	}
}

// TestRouteScopedThrottle: a decision on one route pattern limits that
// route only, with the middleware wrapping the whole mux.
func TestRouteScopedThrottle(t *testing.T) {
	r := newRig(t)
	lim := r.limiter(t, nil)
	m := r.meter(t, testConfig(), lim)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/export/{id}", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("GET /v1/invoices", func(w http.ResponseWriter, r *http.Request) {})
	srv := httptest.NewServer(m.Handler(mux))
	defer srv.Close()
	now := time.Now()
	if _, err := r.publisher(t).Put(context.Background(), limiter.Decision{TenantID: "acme",
		Scope: limiter.RouteScope("GET /v1/export/{id}"), Action: limiter.ActionThrottle, RatePerSec: 0.01, Burst: 1,
		IssuedAt: now, ExpiresAt: now.Add(time.Minute), Reason: "test", Source: limiter.SourceManual}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the route decision", func() bool { return lim.HasRouteDecisions("acme") })
	if c := do(t, "GET", srv.URL+"/v1/export/1", "acme", "", "").StatusCode; c != 200 {
		t.Fatalf("first export: %d, want 200", c)
	}
	if c := do(t, "GET", srv.URL+"/v1/export/2", "acme", "", "").StatusCode; c != 429 {
		t.Fatalf("second export: %d, want 429 from the route scope", c)
	}
	if c := do(t, "GET", srv.URL+"/v1/invoices", "acme", "", "").StatusCode; c != 200 {
		t.Fatalf("other route: %d, want 200", c)
	}
	evs := r.stored(t, "acme", event.KindAPIRequest, 3)
	if evs[1].Route != "GET /v1/export/{id}" || evs[1].Attrs["rejected"] != "throttled" {
		t.Fatalf("rejected event %+v, want route GET /v1/export/{id} marked throttled", evs[1])
	}
}

// TestPanicIsMeteredAndPropagates: a panicking handler's request is stored
// as an error with status 500 and attrs.panic, and the panic reaches the
// server (which closes the connection) unrecovered.
func TestPanicIsMeteredAndPropagates(t *testing.T) {
	r := newRig(t)
	m := r.meter(t, testConfig(), nil)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/crash", func(w http.ResponseWriter, r *http.Request) { panic("handler bug") })
	h := m.Handler(mux)

	var got any
	func() {
		defer func() { got = recover() }()
		req := httptest.NewRequest("GET", "/v1/crash", nil)
		req.Header.Set("X-Tenant-ID", "acme")
		h.ServeHTTP(httptest.NewRecorder(), req)
	}()
	if got != "handler bug" {
		t.Fatalf("recovered %v, want the handler's panic to propagate", got)
	}
	srv := httptest.NewServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/v1/crash", nil)
	req.Header.Set("X-Tenant-ID", "acme")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("got a %d response, want the server to drop the connection of a panicking handler", resp.StatusCode)
	}
	evs := r.stored(t, "acme", event.KindAPIRequest, 2)
	for _, e := range evs {
		if e.Status != 500 || !e.Error || e.Attrs["panic"] != "true" || e.Route != "GET /v1/crash" {
			t.Fatalf("panic event %+v, want 500, error, attrs.panic, route GET /v1/crash", e)
		}
	}
}

// TestSwitches: metering and guarding are each switched off by config.
func TestSwitches(t *testing.T) {
	r := newRig(t)
	lim := r.limiter(t, nil)
	now := time.Now()
	if err := lim.Apply(limiter.Decision{TenantID: "shed", Scope: limiter.ScopeAll, Action: limiter.ActionShed,
		IssuedAt: now, ExpiresAt: now.Add(time.Minute), Source: limiter.SourceManual}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name         string
		meter, guard bool
		wantStatus   int
		wantEvents   int
	}{
		{"both", true, true, 429, 1},
		{"meter only", true, false, 200, 1},
		{"guard only", false, true, 429, 0},
		{"neither", false, false, 200, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Meter, cfg.Guard = c.meter, c.guard
			m := r.meter(t, cfg, lim)
			seen := ""
			h := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen = event.TenantFrom(r.Context())
			}))
			req := httptest.NewRequest("GET", "/", nil)
			req.Header.Set("X-Tenant-ID", "shed")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.wantStatus {
				t.Fatalf("status %d, want %d", rec.Code, c.wantStatus)
			}
			if c.wantStatus == 200 && seen != "shed" {
				t.Fatalf("handler saw tenant %q in its context, want shed", seen)
			}
			before := m.Emitted()
			if err := m.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := int(m.Emitted() - before); got != c.wantEvents {
				t.Fatalf("emitted %d events, want %d", got, c.wantEvents)
			}
		})
	}
}

// TestAnonymousAndContextTenant: without a Tenant func the tenant comes
// from the request's context; AllowAnonymous passes requests without one.
func TestAnonymousAndContextTenant(t *testing.T) {
	r := newRig(t)
	cfg := testConfig()
	cfg.HTTP.Tenant, cfg.HTTP.User = nil, nil
	m := r.meter(t, cfg, nil)
	inner := m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	auth := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tn := r.Header.Get("X-Tenant-ID"); tn != "" {
			r = r.WithContext(event.WithIdentity(r.Context(), event.Identity{Tenant: tn, User: "from-auth"}))
		}
		inner.ServeHTTP(w, r)
	})
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("X-Tenant-ID", "acme")
	rec := httptest.NewRecorder()
	auth.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("tenant from context: %d, want 200", rec.Code)
	}
	rec = httptest.NewRecorder()
	auth.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 401 {
		t.Fatalf("no tenant: %d, want 401", rec.Code)
	}
	cfg.HTTP.AllowAnonymous = true
	anon := r.meter(t, cfg, nil).Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	rec = httptest.NewRecorder()
	anon.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 {
		t.Fatalf("anonymous allowed: %d, want 200", rec.Code)
	}
	if e := r.stored(t, "acme", event.KindAPIRequest, 1)[0]; e.User != "from-auth" {
		t.Fatalf("user %q, want the one in the context", e.User)
	}
}

// TestWriterKeepsOptionalInterfaces: handlers that flush, stream with
// io.Copy or use http.ResponseController keep working, and their bytes
// are counted.
func TestWriterKeepsOptionalInterfaces(t *testing.T) {
	r := newRig(t)
	m := r.meter(t, testConfig(), nil)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		f, ok := w.(http.Flusher)
		if !ok {
			t.Error("the wrapped writer is not an http.Flusher")
			return
		}
		io.WriteString(w, "a")
		f.Flush()
		if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			t.Errorf("ResponseController through the wrapper: %v", err)
		}
		io.Copy(w, strings.NewReader(strings.Repeat("b", 5000)))
	})
	srv := httptest.NewServer(m.Handler(mux))
	defer srv.Close()
	do(t, "GET", srv.URL+"/stream", "acme", "", "")
	e := r.stored(t, "acme", event.KindAPIRequest, 1)[0]
	if e.Attrs["response_bytes"] != "5001" || e.Status != 200 {
		t.Fatalf("event %+v, want 200 and 5001 response bytes", e)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := meter.DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	c := meter.DefaultConfig()
	c.QueueSize, c.FlushInterval, c.HTTP.Kind, c.Outbound.Kind = 0, 0, "Bad", ""
	err := c.Validate()
	for _, want := range []string{"meter.Config.QueueSize:", "meter.Config.FlushInterval:", "meter.Config.HTTP.Kind:", "meter.Config.Outbound.Kind:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want it to name %s", err, want)
		}
	}
	if _, err := meter.New(c, meter.Deps{}); err == nil {
		t.Fatal("New accepted an invalid config")
	}
	m, err := meter.New(meter.DefaultConfig(), meter.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Metering() || m.Guarding() {
		t.Fatal("a meter without emitter and limiter meters or guards")
	}
	for range 2 {
		if err := m.Close(context.Background()); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	}
}

// TestRouteIsTheInnermostPattern: wrapped around a mux that an outer mux
// routes to by prefix, the route is the inner pattern; wrapped around one
// handler, it is the outer mux's pattern.
func TestRouteIsTheInnermostPattern(t *testing.T) {
	r := newRig(t)
	m := r.meter(t, testConfig(), nil)
	inner := http.NewServeMux()
	inner.HandleFunc("GET /v1/invoices/{id}", func(w http.ResponseWriter, r *http.Request) {})
	outer := http.NewServeMux()
	outer.Handle("/v1/", m.Handler(inner))
	outer.Handle("GET /v2/orders/{id}", m.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	srv := httptest.NewServer(outer)
	defer srv.Close()
	do(t, "GET", srv.URL+"/v1/invoices/7", "acme", "", "")
	do(t, "GET", srv.URL+"/v2/orders/9", "acme", "", "")
	evs := r.stored(t, "acme", event.KindAPIRequest, 2)
	if evs[0].Route != "GET /v1/invoices/{id}" || evs[1].Route != "GET /v2/orders/{id}" {
		t.Fatalf("routes %q and %q, want GET /v1/invoices/{id} and GET /v2/orders/{id}", evs[0].Route, evs[1].Route)
	}
}
