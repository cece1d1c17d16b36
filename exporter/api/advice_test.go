package api

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/anomaly/advisor"
	"github.com/tenantguard/tenantguard/exporter/billing"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// TestAdvice: the seeded two hours split evenly between acme and globex,
// so each holds half of every pooled resource in both hours and is heavy;
// the answer is the report `advise --format json` prints.
func TestAdvice(t *testing.T) {
	st := teststore.New(t)
	seed(t, st)
	f := start(t, st, testConfig())

	r := get(t, f.url+"/api/v1/advice?from=2026-11-01T00:00:00Z&to=2026-11-01T01:30:00Z", bearer("admin"))
	if r.status != http.StatusOK {
		t.Fatalf("got %d %s, want 200", r.status, r.body)
	}
	var rep advisor.Report
	if err := json.Unmarshal(r.body, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.To.Equal(t0.Add(2*time.Hour)) || rep.Hours != 2 || rep.Heavy != 2 || len(rep.Tenants) != 2 {
		t.Fatalf("got %+v, want 2 hours (to widened to 02:00) and both tenants heavy", rep)
	}
	for _, a := range rep.Tenants {
		ev := a.Resources[0]
		if a.Recommendation != advisor.MoveToDedicated || ev.Resource != advisor.ResourceEvents || ev.Share != 0.5 || ev.HoursOver != 2 {
			t.Errorf("%s: got %s, events %+v; want move_to_dedicated at share 0.5 in 2 hours", a.TenantID, a.Recommendation, ev)
		}
	}
	for _, key := range []string{`"tenant_id"`, `"recommendation"`, `"hours_over_fraction"`, `"recent_share"`, `"trend"`, `"thresholds"`, `"pool"`} {
		if !strings.Contains(string(r.body), key) {
			t.Errorf("the body lacks %s", key)
		}
	}

	for _, q := range []string{
		"from=2026-11-01T00:00:00Z",                           // to missing
		"from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z",   // reversed
		"from=2025-01-01T00:00:00Z&to=2026-11-01T00:00:00Z",   // longer than api.max_range
		"from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z&x", // unknown parameter
	} {
		if r := get(t, f.url+"/api/v1/advice?"+q, bearer("admin")); r.status != http.StatusBadRequest {
			t.Errorf("%s: got %d %s, want 400", q, r.status, r.body)
		}
	}
}

func TestAdviceWithoutAdvisorIsUnavailable(t *testing.T) {
	st := teststore.New(t)
	exp, err := billing.New(billing.DefaultConfig(), st)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	srv, err := New(cfg, Deps{DB: st, Exporter: exp, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	r := serve(srv, "/api/v1/advice", bearer("admin"))
	if r.Code != http.StatusServiceUnavailable {
		t.Fatalf("got %d, want 503", r.Code)
	}
	if r := serve(srv, "/api/v1/advice", bearer("billing")); r.Code != http.StatusForbidden {
		t.Fatalf("billing: got %d, want 403", r.Code)
	}
}

// serve calls the server's handler directly.
func serve(srv *Server, path, auth string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, path, nil)
	req.Header.Set("Authorization", auth)
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	return rec
}
