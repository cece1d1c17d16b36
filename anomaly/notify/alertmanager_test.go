package notify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

// gettableAlert is the part of Alertmanager's GET /api/v2/alerts we check.
type gettableAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
	Status      struct {
		State string `json:"state"`
	} `json:"status"`
}

// amAlerts lists the alerts Alertmanager's API returns for tenant (it
// leaves resolved alerts out).
func amAlerts(t *testing.T, base, tenant string) []gettableAlert {
	t.Helper()
	q := url.Values{"filter": {`tenant="` + tenant + `"`}}
	resp, err := http.Get(base + "/api/v2/alerts?" + q.Encode())
	if err != nil {
		t.Fatalf("get alerts: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("get alerts: status %d: %s", resp.StatusCode, body)
	}
	var out []gettableAlert
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("decode alerts: %v: %s", err, body)
	}
	return out
}

func TestAlertmanagerFireResendResolve(t *testing.T) {
	am := testenv.StartAlertmanager(t)
	cfg := testConfig()
	cfg.Alertmanager.URLs = []string{am.URL}
	cfg.Alertmanager.ResendInterval = 300 * time.Millisecond
	cfg.Alertmanager.ResolveTimeout = 2 * time.Second
	f, reg := start(t, cfg, Deps{})

	a := testAlert("acme")
	a.Labels = map[string]string{"team": "billing", "tenant": "spoofed", "bad-name": "x"}
	f.Send(context.Background(), a)
	f.Send(context.Background(), testAlert("other")) // a second tenant, to check the filter

	var got []gettableAlert
	testenv.Eventually(t, 10*time.Second, "alert for acme never appeared in Alertmanager", func() bool {
		got = amAlerts(t, am.URL, "acme")
		return len(got) == 1
	})
	g := got[0]
	want := map[string]string{
		"alertname": "TenantguardUsageSpike", "tenant": "acme", "metric": "usage",
		"severity": "warning", "kind": "api_request", "team": "billing",
	}
	for k, v := range want {
		if g.Labels[k] != v {
			t.Errorf("label %s: got %q, want %q", k, g.Labels[k], v)
		}
	}
	if _, ok := g.Labels["bad-name"]; ok {
		t.Errorf("invalid label name was sent: %v", g.Labels)
	}
	if len(g.Labels) != len(want) {
		t.Errorf("labels: got %v, want %v", g.Labels, want)
	}
	for k, v := range map[string]string{"observed": "930", "baseline": "300", "ratio": "3.1", "summary": a.Summary, "fingerprint": a.Fingerprint} {
		if g.Annotations[k] != v {
			t.Errorf("annotation %s: got %q, want %q", k, g.Annotations[k], v)
		}
	}
	if g.Status.State != "active" {
		t.Errorf("state: got %q, want active", g.Status.State)
	}
	if !g.StartsAt.Equal(a.StartsAt) {
		t.Errorf("startsAt: got %s, want %s", g.StartsAt, a.StartsAt)
	}
	if d := time.Until(g.EndsAt); d <= 0 || d > cfg.Alertmanager.ResolveTimeout {
		t.Errorf("endsAt of a firing alert: got now%+v, want within (now, now+%s]", d, cfg.Alertmanager.ResolveTimeout)
	}

	// The detector sent the alert once; resends alone keep it active well
	// past the resolve timeout, because each pushes endsAt forward.
	time.Sleep(cfg.Alertmanager.ResolveTimeout + time.Second)
	if got := amAlerts(t, am.URL, "acme"); len(got) != 1 || !got[0].EndsAt.After(time.Now()) {
		t.Fatalf("firing alert not kept active by resends: %+v", got)
	}
	if sent := testenv.MetricValue(t, reg, "tenantguard_notifier_sent_total", "sink", "alertmanager"); sent < 4 {
		t.Errorf("sent_total{alertmanager}: got %v, want >= 4 (first post and resends)", sent)
	}

	f.Send(context.Background(), resolved(a))
	testenv.Eventually(t, 10*time.Second, "resolved alert still active in Alertmanager", func() bool {
		return len(amAlerts(t, am.URL, "acme")) == 0
	})
	if got := amAlerts(t, am.URL, "other"); len(got) != 1 {
		t.Errorf("the other tenant's alert: got %d alerts, want 1 still active", len(got))
	}
	if n := testenv.MetricValue(t, reg, "tenantguard_notifier_failures_total", "sink", "alertmanager"); n != 0 {
		t.Errorf("failures_total: got %v, want 0", n)
	}
}

// TestAlertmanagerDown sends to one live and one unreachable Alertmanager:
// the live one gets the alert, the dead one is retried and counted as
// failing, and Send never blocks even when the queue overflows.
func TestAlertmanagerDown(t *testing.T) {
	am := testenv.StartAlertmanager(t)
	dead := "http://127.0.0.1:" + itoa(testenv.FreePort(t))
	cfg := testConfig()
	cfg.QueueSize = 4
	cfg.Alertmanager.URLs = []string{dead, am.URL}
	cfg.Alertmanager.MaxRetries = 2
	cfg.Alertmanager.RetryBackoff = 20 * time.Millisecond
	cfg.Alertmanager.ResendInterval = 200 * time.Millisecond
	cfg.Alertmanager.ResolveTimeout = 5 * time.Second
	f, reg := start(t, cfg, Deps{})

	const n = 2000
	begin := time.Now()
	for i := range n {
		a := testAlert("t" + itoa(i))
		f.Send(context.Background(), a)
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("%d Sends took %s with an Alertmanager down; Send must not block", n, d)
	}
	testenv.Eventually(t, 10*time.Second, "failures to the dead Alertmanager not counted", func() bool {
		return testenv.MetricValue(t, reg, "tenantguard_notifier_failures_total", "sink", "alertmanager") >= 1
	})
	if r := testenv.MetricValue(t, reg, "tenantguard_notifier_retries_total", "sink", "alertmanager"); r < 2 {
		t.Errorf("retries_total: got %v, want >= 2", r)
	}
	if d := testenv.MetricValue(t, reg, "tenantguard_notifier_dropped_total", "sink", "alertmanager"); d < n-100 {
		t.Errorf("dropped_total: got %v, want most of %d (queue size 4)", d, n)
	}
	// drop_oldest keeps the newest alert, and the live Alertmanager has it.
	last := "t" + itoa(n-1)
	testenv.Eventually(t, 10*time.Second, "newest alert not delivered to the live Alertmanager", func() bool {
		return len(amAlerts(t, am.URL, last)) == 1
	})
}

// TestAlertmanagerRecovers checks that an alert an Alertmanager refused
// while it was failing is delivered by the resend loop once it recovers.
func TestAlertmanagerRecovers(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	var mu sync.Mutex
	var bodies [][]amAlert
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v2/alerts" || r.Method != http.MethodPost {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		if down.Load() {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		var got []amAlert
		if err := json.NewDecoder(r.Body).Decode(&got); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		bodies = append(bodies, got)
		mu.Unlock()
	}))
	defer srv.Close()
	cfg := testConfig()
	cfg.Alertmanager.URLs = []string{srv.URL}
	cfg.Alertmanager.MaxRetries = 1
	cfg.Alertmanager.RetryBackoff = 10 * time.Millisecond
	cfg.Alertmanager.ResendInterval = 10 * time.Second // recovery must not wait for a resend
	cfg.Alertmanager.ResolveTimeout = time.Minute
	f, reg := start(t, cfg, Deps{})

	a := testAlert("acme")
	f.Send(context.Background(), a)
	testenv.Eventually(t, 5*time.Second, "failure not counted", func() bool {
		return testenv.MetricValue(t, reg, "tenantguard_notifier_failures_total", "sink", "alertmanager") >= 1
	})
	down.Store(false)
	testenv.Eventually(t, 10*time.Second, "alert not delivered after recovery", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(bodies) > 0
	})
	mu.Lock()
	defer mu.Unlock()
	if len(bodies[0]) != 1 || bodies[0][0].Labels["tenant"] != "acme" {
		t.Errorf("delivered after recovery: got %+v, want the acme alert", bodies[0])
	}
}

// TestAlertmanagerResendSemantics drives the sink on a fake clock.
func TestAlertmanagerResendSemantics(t *testing.T) {
	var posts atomic.Int32
	var last atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var got []amAlert
		_ = json.NewDecoder(r.Body).Decode(&got)
		last.Store(got)
		posts.Add(1)
	}))
	defer srv.Close()
	cfg := DefaultConfig().Alertmanager
	cfg.URLs = []string{srv.URL + "/prefix/"}
	am, err := NewAlertmanager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if want := srv.URL + "/prefix/api/v2/alerts"; am.endpoints[0] != want {
		t.Fatalf("endpoint: got %s, want %s", am.endpoints[0], want)
	}
	am.endpoints[0] = srv.URL + "/api/v2/alerts"
	now := time.Now()
	am.now = func() time.Time { return now }
	ctx := context.Background()
	a := testAlert("acme")

	step := func(name string, wantPosts int32, call func() (Result, error)) {
		t.Helper()
		before := posts.Load()
		if _, err := call(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := posts.Load() - before; got != wantPosts {
			t.Errorf("%s: got %d posts, want %d", name, got, wantPosts)
		}
	}
	notify := func(a anomaly.Alert) func() (Result, error) {
		return func() (Result, error) { return am.Notify(ctx, []anomaly.Alert{a}) }
	}
	resend := func() (Result, error) { return am.Resend(ctx, now) }

	step("first firing", 1, notify(a))
	if ends := last.Load().([]amAlert)[0].EndsAt; !ends.Equal(now.Add(cfg.ResolveTimeout)) {
		t.Errorf("endsAt while firing: got %s, want now+%s", ends, cfg.ResolveTimeout)
	}
	now = now.Add(10 * time.Second)
	step("repeat within resend interval", 0, notify(a))
	step("tick within resend interval", 0, resend)
	now = now.Add(cfg.ResendInterval)
	step("tick after resend interval", 1, resend)
	now = now.Add(time.Second)
	r := resolved(a)
	r.EndsAt = now
	step("resolution is posted at once", 1, notify(r))
	if got := last.Load().([]amAlert)[0].EndsAt; !got.Equal(now) {
		t.Errorf("endsAt of resolved: got %s, want %s", got, now)
	}
	now = now.Add(cfg.ResendInterval)
	step("resolved is re-posted during retention", 1, resend)
	now = now.Add(cfg.ResolvedRetention)
	step("resolved is forgotten after retention", 0, resend)
	if am.Active() != 0 {
		t.Errorf("active after retention: got %d, want 0", am.Active())
	}

	b := testAlert("beta")
	step("second alert", 1, notify(b))
	now = now.Add(24 * time.Hour)
	step("a firing alert is re-posted until it resolves", 1, resend)
	am.cfg.StaleTimeout = time.Hour
	now = now.Add(time.Hour)
	step("with a stale timeout, a firing alert the detector stopped sending is forgotten", 0, resend)
	if am.Active() != 0 {
		t.Errorf("active after stale timeout: got %d, want 0", am.Active())
	}
}

func TestAlertname(t *testing.T) {
	for metric, want := range map[string]string{
		anomaly.MetricUsage: "TenantguardUsageSpike", anomaly.MetricLatencyP95: "TenantguardLatencyRegression",
		anomaly.MetricErrorRate: "TenantguardErrorRateSpike", anomaly.MetricCost: "TenantguardCostSpike",
		anomaly.MetricSpendCap: "TenantguardSpendCap", anomaly.MetricHeavyTenant: "TenantguardHeavyTenant", "new_metric": AlertnameOther,
	} {
		if got := Alertname(metric); got != want {
			t.Errorf("Alertname(%q): got %q, want %q", metric, got, want)
		}
	}
}

func TestAlertmanagerMaxActive(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	cfg := DefaultConfig().Alertmanager
	cfg.URLs = []string{srv.URL}
	cfg.MaxActive = 2
	am, err := NewAlertmanager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	res, err := am.Notify(context.Background(), []anomaly.Alert{testAlert("a"), testAlert("b"), testAlert("c")})
	if err == nil || res.Failed != 1 || res.Sent != 2 || am.Active() != 2 {
		t.Errorf("max_active 2 with 3 alerts: got %+v, active %d, err %v; want 2 sent, 1 failed", res, am.Active(), err)
	}
}
