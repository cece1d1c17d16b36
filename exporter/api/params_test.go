package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/internal/teststore"
)

var injections = []string{
	"acme' OR '1'='1",
	"acme'--",
	"1; DROP TABLE events",
	"' UNION SELECT name FROM system.tables --",
	"acme\x00",
	`acme\'`,
	"${jndi:ldap://x}",
	"../globex",
	"acme globex",
	"acme%27",
	strings.Repeat("a", 300),
}

// Every parameter of every endpoint, with a valid value; the injection test
// replaces one at a time.
var paramEndpoints = []struct {
	path   string // may hold {tenant}
	params map[string]string
}{
	{"/api/v1/tenants/{tenant}/usage", map[string]string{"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z", "window": "hour", "kind": "ai_tokens", "limit": "10", "cursor": encodeCursor(0)}},
	{"/api/v1/tenants/{tenant}/cost", map[string]string{"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"}},
	{"/api/v1/tenants/{tenant}/anomalies", map[string]string{"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z", "status": "firing", "limit": "10", "cursor": encodeCursor(0)}},
	{"/api/v1/tenants/{tenant}/decisions", map[string]string{"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z", "action": "throttle", "limit": "10", "cursor": encodeCursor(0)}},
	{"/api/v1/tenants/{tenant}/events", map[string]string{"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z", "format": "csv"}},
	{"/api/v1/billing/export", map[string]string{"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z", "tenant": "acme", "format": "csv"}},
	{"/api/v1/costs", map[string]string{"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z", "order": "cost_desc", "limit": "10", "cursor": encodeCursor(0)}},
	{"/api/v1/anomalies", map[string]string{"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z", "tenant": "acme", "status": "resolved", "limit": "10", "cursor": encodeCursor(0)}},
	{"/api/v1/decisions", map[string]string{"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z", "tenant": "acme", "action": "clear", "limit": "10", "cursor": encodeCursor(0)}},
	{"/api/v1/pg/findings", map[string]string{"from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z", "class": "unscoped", "database": "app", "limit": "10", "cursor": encodeCursor(0)}},
}

func buildURL(base, path, tenant string, params map[string]string) string {
	v := url.Values{}
	for k, val := range params {
		v.Set(k, val)
	}
	return base + strings.Replace(path, "{tenant}", url.PathEscape(tenant), 1) + "?" + v.Encode()
}

func countEvents(t *testing.T, f *fixture) uint64 {
	t.Helper()
	var n uint64
	if err := f.st.Conn().QueryRow(context.Background(), "SELECT count() FROM "+f.st.Table("events")).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestInjectionIsRejected(t *testing.T) {
	st := teststore.New(t)
	seed(t, st)
	f := start(t, st, testConfig())
	before := countEvents(t, f)
	for _, ep := range paramEndpoints {
		// The valid request works, so a 400 below is about the one bad value.
		if r := get(t, buildURL(f.url, ep.path, "acme", ep.params), bearer("admin")); r.status != http.StatusOK {
			t.Fatalf("%s with valid params: got %d %s", ep.path, r.status, r.body)
		}
		for _, bad := range injections {
			if strings.Contains(ep.path, "{tenant}") {
				r := get(t, buildURL(f.url, ep.path, bad, ep.params), bearer("admin"))
				if r.status != http.StatusBadRequest {
					t.Errorf("%s tenant_id %.40q: got %d %.200s, want 400", ep.path, bad, r.status, r.body)
				} else {
					errorMessage(t, r)
				}
			}
			for name := range ep.params {
				p := map[string]string{}
				for k, v := range ep.params {
					p[k] = v
				}
				p[name] = bad
				r := get(t, buildURL(f.url, ep.path, "acme", p), bearer("admin"))
				if r.status != http.StatusBadRequest {
					t.Errorf("%s %s=%.40q: got %d %.200s, want 400", ep.path, name, bad, r.status, r.body)
					continue
				}
				if msg := errorMessage(t, r); !strings.Contains(msg, name) {
					t.Errorf("%s %s: message %q does not name the parameter", ep.path, name, msg)
				}
			}
		}
		// Unknown and repeated parameters are refused too.
		p := map[string]string{"x": "1"}
		for k, v := range ep.params {
			p[k] = v
		}
		if r := get(t, buildURL(f.url, ep.path, "acme", p), bearer("admin")); r.status != http.StatusBadRequest {
			t.Errorf("%s with an unknown parameter: got %d, want 400", ep.path, r.status)
		}
		if r := get(t, buildURL(f.url, ep.path, "acme", ep.params)+"&from=2026-11-01T00:00:00Z", bearer("admin")); r.status != http.StatusBadRequest {
			t.Errorf("%s with from twice: got %d, want 400", ep.path, r.status)
		}
	}
	if after := countEvents(t, f); after != before {
		t.Fatalf("events went from %d to %d rows during the injection test", before, after)
	}
}

func TestRangeValidation(t *testing.T) {
	st := teststore.New(t)
	cfg := testConfig()
	f := start(t, st, cfg)
	for q, want := range map[string]string{
		"":                          "from: required",
		"from=2026-11-01T00:00:00Z": "to: required",
		"from=2026-11-01&to=2026-11-02T00:00:00Z":                                             "from: \"2026-11-01\" is not an RFC 3339 time",
		"from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z":                                   "to: must be after from",
		"from=2026-11-01T00:00:00Z&to=2026-11-01T00:00:00Z":                                   "to: must be after from",
		"from=2026-01-01T00:00:00Z&to=2026-11-01T00:00:00Z":                                   "longer than the maximum",
		"from=1900-01-01T00:00:00Z&to=1900-01-02T00:00:00Z":                                   "between 1970 and 2105",
		"from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z&window=week":                       "window:",
		"from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z&limit=0":                           "limit:",
		"from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z&limit=1001":                        "limit:",
		"from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z&limit=ten":                         "limit:",
		"from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z&cursor=abc":                        "cursor:",
		"from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z&cursor=" + encodeCursor(maxOffset): "cursor:",
		"from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z&kind=AI":                           "kind:",
		"%zz": "malformed query string",
	} {
		r := get(t, f.url+"/api/v1/tenants/acme/usage?"+q, bearer("admin"))
		if r.status != http.StatusBadRequest {
			t.Errorf("%q: got %d, want 400", q, r.status)
			continue
		}
		if msg := errorMessage(t, r); !strings.Contains(msg, want) {
			t.Errorf("%q: message %q, want it to contain %q", q, msg, want)
		}
	}
	// The span limit is exactly max_range.
	if r := get(t, f.url+"/api/v1/costs?from=2026-10-01T00:00:00Z&to=2026-11-01T00:00:00Z", bearer("admin")); r.status != http.StatusOK {
		t.Errorf("a 31-day range: got %d %s, want 200", r.status, r.body)
	}
}

func TestPagination(t *testing.T) {
	st := teststore.New(t)
	seed(t, st)
	f := start(t, st, testConfig())
	var seen []string
	cursor := ""
	pages := 0
	for {
		u := f.url + "/api/v1/tenants/acme/decisions?" + rng + "&limit=10"
		if cursor != "" {
			u += "&cursor=" + cursor
		}
		r := get(t, u, bearer("acme"))
		if r.status != http.StatusOK {
			t.Fatalf("page %d: %d %s", pages, r.status, r.body)
		}
		var body struct {
			Items      []decision `json:"items"`
			NextCursor string     `json:"next_cursor"`
		}
		if err := json.Unmarshal(r.body, &body); err != nil {
			t.Fatal(err)
		}
		pages++
		for _, d := range body.Items {
			if d.TenantID != "acme" {
				t.Fatalf("page %d holds a decision of %s", pages, d.TenantID)
			}
			seen = append(seen, d.IssuedAt.String())
		}
		if body.NextCursor == "" {
			break
		}
		if len(body.Items) != 10 {
			t.Fatalf("page %d has %d items and a next cursor", pages, len(body.Items))
		}
		cursor = body.NextCursor
	}
	if pages != 3 || len(seen) != 25 {
		t.Fatalf("got %d pages and %d decisions, want 3 and 25", pages, len(seen))
	}
	uniq := map[string]bool{}
	for i, s := range seen {
		if uniq[s] {
			t.Fatalf("decision %s returned twice", s)
		}
		uniq[s] = true
		if i > 0 && s > seen[i-1] {
			t.Fatalf("decisions not newest first at %d", i)
		}
	}
}
