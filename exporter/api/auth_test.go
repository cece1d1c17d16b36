package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/internal/teststore"
)

const rng = "from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z"

// endpoint is one row of the auth matrix: who may call it (roles by name;
// "acme" and "globex" are the two tenant tokens) and, when it is scoped to
// one tenant, which one, so a response can be checked for the other's data.
type endpoint struct {
	path   string
	allow  []string
	scoped string // tenant whose data alone may appear, "" for global views
}

var matrix = []endpoint{
	{"/api/v1/tenants/acme/usage?" + rng + "&window=hour", []string{"admin", "billing", "acme"}, "acme"},
	{"/api/v1/tenants/acme/cost?" + rng, []string{"admin", "billing", "acme"}, "acme"},
	{"/api/v1/tenants/acme/anomalies?" + rng, []string{"admin", "acme"}, "acme"},
	{"/api/v1/tenants/acme/decisions?" + rng, []string{"admin", "acme"}, "acme"},
	{"/api/v1/tenants/acme/events?" + rng, []string{"admin", "acme"}, "acme"},
	{"/api/v1/tenants/acme/events?" + rng + "&format=csv", []string{"admin", "acme"}, "acme"},
	{"/api/v1/tenants/globex/usage?" + rng, []string{"admin", "billing", "globex"}, "globex"},
	{"/api/v1/tenants/globex/cost?" + rng, []string{"admin", "billing", "globex"}, "globex"},
	{"/api/v1/tenants/globex/anomalies?" + rng, []string{"admin", "globex"}, "globex"},
	{"/api/v1/tenants/globex/decisions?" + rng, []string{"admin", "globex"}, "globex"},
	{"/api/v1/tenants/globex/events?" + rng, []string{"admin", "globex"}, "globex"},
	{"/api/v1/billing/export?" + rng, []string{"admin", "billing"}, ""},
	{"/api/v1/billing/export?" + rng + "&format=json", []string{"admin", "billing"}, ""},
	{"/api/v1/billing/export?" + rng + "&tenant=acme", []string{"admin", "billing"}, "acme"},
	{"/api/v1/costs?" + rng, []string{"admin", "billing"}, ""},
	{"/api/v1/anomalies?" + rng, []string{"admin"}, ""},
	{"/api/v1/anomalies?" + rng + "&tenant=acme", []string{"admin"}, "acme"},
	{"/api/v1/decisions?" + rng, []string{"admin"}, ""},
	{"/api/v1/decisions?" + rng + "&tenant=globex", []string{"admin"}, "globex"},
	{"/api/v1/pg/findings?" + rng, []string{"admin"}, ""},
	{"/api/v1/advice?" + rng, []string{"admin"}, ""},
	{"/api/v1/advice", []string{"admin"}, ""},
}

var roles = []string{"admin", "billing", "acme", "globex"}

func other(tenant string) string {
	if tenant == "acme" {
		return "globex"
	}
	return "acme"
}

func TestAuthMatrix(t *testing.T) {
	st := teststore.New(t)
	seed(t, st)
	f := start(t, st, testConfig())
	badAuth := []string{
		"",                                // no header
		"Bearer",                          // no token
		"Bearer ",                         // empty token
		"Bearer tok-nobody",               // unknown token
		"Basic " + tokens["admin"],        // wrong scheme
		"Bearer " + hash(tokens["admin"]), // the stored hash is not the token
		"Bearer " + tokens["admin"] + "x", // near miss
		"Bearer " + strings.Repeat("a", 5000),
	}
	for _, ep := range matrix {
		for _, a := range badAuth {
			r := get(t, f.url+ep.path, a)
			if r.status != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s with %.20q: got %d, want 401 with WWW-Authenticate", ep.path, a, r.status)
			}
			errorMessage(t, r)
		}
		for _, role := range roles {
			r := get(t, f.url+ep.path, bearer(role))
			allowed := false
			for _, a := range ep.allow {
				allowed = allowed || a == role
			}
			if !allowed {
				if r.status != http.StatusForbidden {
					t.Errorf("%s as %s: got %d, want 403", ep.path, role, r.status)
				}
				errorMessage(t, r)
				if bytes.Contains(r.body, []byte("ai_tokens")) || bytes.Contains(r.body, []byte("spike of")) {
					t.Errorf("%s as %s: 403 body carries data: %s", ep.path, role, r.body)
				}
				continue
			}
			if r.status != http.StatusOK {
				t.Errorf("%s as %s: got %d %s, want 200", ep.path, role, r.status, r.body)
				continue
			}
			// Every allowed call returns real data, so the matrix cannot pass on empty answers.
			if !bytes.Contains(r.body, []byte(ep.scoped)) || len(r.body) < 50 {
				t.Errorf("%s as %s: response has no data: %s", ep.path, role, r.body)
			}
			if ep.scoped != "" && bytes.Contains(r.body, []byte(other(ep.scoped))) {
				t.Errorf("%s as %s: LEAK: response mentions %s: %.300s", ep.path, role, other(ep.scoped), r.body)
			}
		}
	}
	// Global views show both tenants to those allowed.
	for _, path := range []string{"/api/v1/costs?" + rng, "/api/v1/anomalies?" + rng, "/api/v1/billing/export?" + rng} {
		r := get(t, f.url+path, bearer("admin"))
		if !bytes.Contains(r.body, []byte("acme")) || !bytes.Contains(r.body, []byte("globex")) {
			t.Errorf("%s as admin: want both tenants, got %.300s", path, r.body)
		}
	}
	// Health needs no token; unknown API paths answer 401 before 404.
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/api/v1/nope": 401, "/api/v2/costs": 401} {
		if r := get(t, f.url+path, ""); r.status != want {
			t.Errorf("%s without token: got %d, want %d", path, r.status, want)
		}
	}
	if r := get(t, f.url+"/api/v1/nope", bearer("acme")); r.status != http.StatusNotFound {
		t.Errorf("unknown path with a token: got %d, want 404", r.status)
	}
	if r := get(t, f.url+"/api/v1/costs?"+rng, "bearer "+tokens["billing"]); r.status != http.StatusOK {
		t.Errorf("lower-case scheme: got %d, want 200", r.status)
	}
}

func TestConfigValidate(t *testing.T) {
	cfg := testConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	cfg.Listen = "8080"
	cfg.MaxRange, cfg.MaxPageSize = 0, 0
	cfg.Tokens = append(cfg.Tokens,
		Token{Name: "", SHA256: "zz", Role: "root"},
		Token{Name: "ops", SHA256: hash(tokens["admin"]), Role: "tenant:a.b"},
	)
	err := cfg.Validate()
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	for _, want := range []string{"api.listen", "api.max_range", "api.max_page_size", "api.tokens[4].name",
		"api.tokens[4].sha256", "api.tokens[4].role", "api.tokens[5].name: \"ops\" is used twice",
		"api.tokens[5].sha256: same token as \"ops\"", "api.tokens[5].role"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), hash(tokens["admin"])) {
		t.Error("the error echoes a token hash")
	}
}

func TestUnmarshalableFloatsBecomeNull(t *testing.T) {
	b, err := json.Marshal(usageBucket{LatencyP50: finite(0 / zero())})
	if err != nil || !bytes.Contains(b, []byte(`"latency_p50_ms":null`)) {
		t.Fatalf("got %s, %v", b, err)
	}
}

func zero() float64 { return 0 }
