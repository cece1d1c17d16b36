package decide

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
	"github.com/tenantguard/tenantguard/limiter"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type env struct {
	pub *limiter.Publisher
	lim *limiter.Limiter
	st  *store.Store
	eng *Engine
	reg *prometheus.Registry
}

// servers starts real NATS and ClickHouse and returns the server, a
// connection, a signing publisher of the decisions bucket and a migrated
// store.
func servers(t *testing.T) (*testenv.NATSServer, *nats.Conn, *limiter.Publisher, *store.Store) {
	t.Helper()
	ns := testenv.NATS(t)
	nc, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if js, err := jetstream.New(nc); err != nil {
		t.Fatal(err)
	} else if _, err := limiter.EnsureBuckets(context.Background(), js, 1, 0); err != nil { // as the daemon does
		t.Fatal(err)
	}
	pub, err := limiter.NewPublisher(context.Background(), nc, limiter.WithSigner(testSigner(t)))
	if err != nil {
		t.Fatal(err)
	}
	srv, db := testenv.ClickHouse(t)
	return ns, nc, pub, teststore.On(t, srv, db)
}

func setup(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	ns, nc, pub, st := servers(t)
	rec := NewClickHouseRecorder(st)
	cfg := DefaultConfig()
	if mod != nil {
		mod(&cfg)
	}
	reg := prometheus.NewPedanticRegistry()
	eng, err := New(cfg, Deps{Publisher: pub, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	runTrail(t, cfg, nc, rec, pub, reg)
	return &env{pub: pub, lim: serviceLimiter(t, ns.URL), st: st, eng: eng, reg: reg}
}

// serviceLimiter runs a service's limiter, trusting the tests' signing
// key, on a connection of its own until the test ends.
func serviceLimiter(t *testing.T, url string) *limiter.Limiter {
	t.Helper()
	lcfg := limiter.DefaultConfig()
	lcfg.TrustedKeys = []string{limiter.FormatPublicKey(testSigner(t).PublicKey())}
	lnc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lnc.Close)
	lim, err := limiter.New(lcfg, limiter.Deps{Conn: lnc, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	testenv.RunStage(t, "limiter", lim.Run)
	return lim
}

// testSigner is the key the tests' publishers sign with.
func testSigner(t testing.TB) *limiter.Signer {
	t.Helper()
	s, err := limiter.NewSigner(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// runTrail records the bucket's revisions through rec until the end of t.
func runTrail(t testing.TB, cfg Config, nc *nats.Conn, rec Recorder, pub *limiter.Publisher, reg prometheus.Registerer) *Trail {
	t.Helper()
	tr, err := NewTrail(cfg, TrailDeps{Conn: nc, Recorder: rec, Verifier: pub.Verifier(), Registerer: reg,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	testenv.RunStage(t, "trail", tr.Run)
	return tr
}

func alert(tenant, metric string, status anomaly.Status, baseline float64) anomaly.Alert {
	start := time.Now().Truncate(time.Minute)
	a := anomaly.Alert{TenantID: tenant, Metric: metric, Status: status, Severity: anomaly.SeverityCritical,
		Observed: baseline * 5, Baseline: baseline, Ratio: 5, StartsAt: start, Summary: "usage 5x baseline",
		Labels: map[string]string{"plan": "pro"}}
	a.Fingerprint = anomaly.Fingerprint(tenant, metric, "", "", start)
	return a
}

func TestUsageSpikeThrottleRenewClear(t *testing.T) {
	e := setup(t, func(c *Config) {
		c.TTL = 3 * time.Second
		c.RenewEvery = 1 * time.Second
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.eng.Run(ctx)
	fire := alert("noisy", anomaly.MetricUsage, anomaly.StatusFiring, 600) // 600/min = 10/s
	e.eng.Send(ctx, fire)
	testenv.Eventually(t, 5*time.Second, "throttle in KV", func() bool {
		d, err := e.pub.Get(ctx, "noisy", limiter.ScopeAll)
		return err == nil && d.Action == limiter.ActionThrottle
	})
	d, _ := e.pub.Get(ctx, "noisy", limiter.ScopeAll)
	if d.RatePerSec != 20 || d.Burst != 40 || d.Source != limiter.SourceAnomaly || d.AnomalyID != fire.Fingerprint {
		t.Fatalf("got %+v, want throttle to 2 x 10/s = 20/s, burst 2 s x 20/s = 40, source anomaly, anomaly_id %s", d, fire.Fingerprint)
	}
	testenv.Eventually(t, 5*time.Second, "limiter applies it", func() bool { r, _, ok := e.lim.Limit("noisy"); return ok && r == 20 })
	if _, _, ok := e.lim.Limit("quiet"); ok {
		t.Fatal("another tenant got a limit")
	}
	// Renewed before expiry while firing: after 2 TTLs it is still live.
	first := d.ExpiresAt
	time.Sleep(4 * time.Second)
	d, err := e.pub.Get(ctx, "noisy", limiter.ScopeAll)
	if err != nil || !d.ExpiresAt.After(first) || !d.Live(time.Now()) {
		t.Fatalf("not renewed: %+v, %v (first expiry %s)", d, err, first)
	}
	if _, _, ok := e.lim.Limit("noisy"); !ok {
		t.Fatal("limiter lost the renewed throttle")
	}
	res := fire
	res.Status, res.EndsAt = anomaly.StatusResolved, time.Now()
	e.eng.Send(ctx, res)
	testenv.Eventually(t, 5*time.Second, "cleared in KV", func() bool {
		_, err := e.pub.Get(ctx, "noisy", limiter.ScopeAll)
		return err != nil
	})
	testenv.Eventually(t, 5*time.Second, "limiter released", func() bool { _, _, ok := e.lim.Limit("noisy"); return !ok })

	var rows map[string]int
	testenv.Eventually(t, 5*time.Second, "clear recorded in ClickHouse", func() bool {
		rows = auditRows(t, e, "noisy")
		return rows["clear"] == 1
	})
	if rows["throttle"] < 3 {
		t.Fatalf("audit rows %v, want >= 3 throttle (issue + renewals) and 1 clear", rows)
	}
	if got := counter(t, e.reg, "tenantguard_decisions_total"); got != float64(rows["throttle"]+rows["clear"]) {
		t.Fatalf("tenantguard_decisions_total = %v, want %d", got, rows["throttle"]+rows["clear"])
	}
}

func TestCircuitAndSpendCap(t *testing.T) {
	e := setup(t, func(c *Config) {
		c.Plans = map[string]Policy{"pro": {DegradedRatePerSec: 3}, "internal": {Disabled: true}}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.eng.Run(ctx)
	errAlert := alert("acme", anomaly.MetricErrorRate, anomaly.StatusFiring, 0.01)
	errAlert.Integration = "stripe"
	if err := e.eng.Handle(ctx, errAlert); err != nil {
		t.Fatal(err)
	}
	d, err := e.pub.Get(ctx, "acme", limiter.IntegrationScope("stripe"))
	if err != nil || d.Action != limiter.ActionOpenCircuit {
		t.Fatalf("got %+v, %v; want open_circuit on integration:stripe", d, err)
	}
	testenv.Eventually(t, 5*time.Second, "circuit forced open", func() bool {
		return e.lim.Breakers().State("acme", "stripe") == limiter.StateOpen
	})
	if s := e.lim.Breakers().State("acme", "github"); s != limiter.StateClosed {
		t.Fatalf("other integration %s, want closed", s)
	}
	// 90% does nothing, 100% degrades.
	cap90 := alert("acme", anomaly.MetricSpendCap, anomaly.StatusFiring, 100)
	cap90.Labels["threshold"] = "90"
	if err := e.eng.Handle(ctx, cap90); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pub.Get(ctx, "acme", limiter.ScopeAll); err == nil {
		t.Fatal("90% spend cap throttled")
	}
	cap100 := cap90
	cap100.Labels = map[string]string{"plan": "pro", "threshold": "100"}
	cap100.Fingerprint = "cap100"
	if err := e.eng.Handle(ctx, cap100); err != nil {
		t.Fatal(err)
	}
	d, err = e.pub.Get(ctx, "acme", limiter.ScopeAll)
	if err != nil || d.RatePerSec != 3 || d.Source != limiter.SourceSpendCap {
		t.Fatalf("got %+v, %v; want the pro plan's degraded rate 3/s from spend_cap", d, err)
	}
	// A disabled plan gets no automatic decision.
	off := alert("staff", anomaly.MetricUsage, anomaly.StatusFiring, 600)
	off.Labels["plan"] = "internal"
	if err := e.eng.Handle(ctx, off); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pub.Get(ctx, "staff", limiter.ScopeAll); err == nil {
		t.Fatal("disabled plan was throttled")
	}
	var rows map[string]int
	testenv.Eventually(t, 5*time.Second, "audit rows", func() bool { rows = auditRows(t, e, "acme"); return len(rows) == 2 })
	if rows["open_circuit"] != 1 || rows["throttle"] != 1 {
		t.Fatalf("audit rows %v, want 1 open_circuit and 1 throttle", rows)
	}
}

func TestManualOutranksEngine(t *testing.T) {
	e := setup(t, func(c *Config) {
		c.TTL = 3 * time.Second
		c.RenewEvery = 500 * time.Millisecond
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	now := time.Now()
	manual := limiter.Decision{TenantID: "vip", Scope: limiter.ScopeAll, Action: limiter.ActionThrottle,
		RatePerSec: 1000, Burst: 1000, IssuedAt: now, ExpiresAt: now.Add(1500 * time.Millisecond),
		Reason: "on-call override", Source: limiter.SourceManual}
	if _, err := e.pub.Put(ctx, manual); err != nil {
		t.Fatal(err)
	}
	err := e.eng.Handle(ctx, alert("vip", anomaly.MetricUsage, anomaly.StatusFiring, 60))
	if !errors.Is(err, limiter.ErrManualOverride) {
		t.Fatalf("got %v, want ErrManualOverride", err)
	}
	if d, _ := e.pub.Get(ctx, "vip", limiter.ScopeAll); d.Source != limiter.SourceManual {
		t.Fatalf("manual decision overwritten: %+v", d)
	}
	if got := counter(t, e.reg, "tenantguard_decisions_suppressed_total"); got < 1 {
		t.Fatalf("suppressed = %v, want 1", got)
	}
	// Once the manual decision expires the engine's renewal takes over.
	go e.eng.Run(ctx)
	testenv.Eventually(t, 5*time.Second, "engine takes over after manual expiry", func() bool {
		d, err := e.pub.Get(ctx, "vip", limiter.ScopeAll)
		return err == nil && d.Source == limiter.SourceAnomaly && d.RatePerSec == 2
	})
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.ThrottleFactor = 0
	c.RenewEvery = c.TTL
	c.Plans = map[string]Policy{"x": {ThrottleFactor: -1}}
	err := c.Validate()
	for _, want := range []string{"decisions.throttle_factor:", "decisions.renew_every:", "decisions.plans.x.throttle_factor:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want it to name %s", err, want)
		}
	}
	c = DefaultConfig()
	c.TTL, c.RenewEvery, c.MaxManualTTL = 2*time.Hour, time.Minute, 0
	c.TrustedKeys = []string{"ed25519:AAAA"}
	err = c.Validate()
	for _, want := range []string{"decisions.ttl: 2h0m0s must be <= max_auto_ttl (1h0m0s)", "decisions.max_manual_ttl: must be > 0",
		"decisions.trusted_keys[0]:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want it to name %s", err, want)
		}
	}
}

func auditRows(t *testing.T, e *env, tenant string) map[string]int {
	t.Helper()
	rows, err := e.st.Conn().Query(context.Background(),
		"SELECT action, count() FROM "+e.st.Database()+".decisions WHERE tenant_id = ? GROUP BY action", tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var a string
		var n uint64
		if err := rows.Scan(&a, &n); err != nil {
			t.Fatal(err)
		}
		out[a] = int(n)
	}
	return out
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestResolutionSurvivesFullQueue: the detector sends each resolution once,
// so a resolution that meets a full queue must still clear the throttle;
// dropping it would renew the throttle forever.
func TestResolutionSurvivesFullQueue(t *testing.T) {
	e := setup(t, func(c *Config) { c.QueueSize = 1 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fire := alert("stuck", anomaly.MetricUsage, anomaly.StatusFiring, 600)
	if err := e.eng.Handle(ctx, fire); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pub.Get(ctx, "stuck", limiter.ScopeAll); err != nil {
		t.Fatalf("no throttle published: %v", err)
	}
	if got := gauge(t, e.reg, "tenantguard_decisions_active"); got != 1 {
		t.Fatalf("tenantguard_decisions_active = %v, want 1", got)
	}
	other := alert("other", anomaly.MetricUsage, anomaly.StatusFiring, 600)
	e.eng.Send(ctx, other) // fills the queue
	res := fire
	res.Status, res.EndsAt = anomaly.StatusResolved, time.Now()
	e.eng.Send(ctx, res) // meets the full queue
	go e.eng.Run(ctx)
	testenv.Eventually(t, 5*time.Second, "throttle cleared in KV", func() bool {
		_, err := e.pub.Get(ctx, "stuck", limiter.ScopeAll)
		return err != nil
	})
	if got := counter(t, e.reg, "tenantguard_decisions_alerts_dropped_total"); got != 0 {
		t.Fatalf("tenantguard_decisions_alerts_dropped_total = %v, want 0", got)
	}
	// "other" still fires; "stuck" is gone.
	testenv.Eventually(t, 5*time.Second, "one active decision left", func() bool { return gauge(t, e.reg, "tenantguard_decisions_active") == 1 })
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no single-series gauge %s", name)
	return 0
}

// A usage alert about one kind (here tokens) throttles the tenant's whole
// rate to the factor times its expected events, not its token count.
func TestUsageThrottleUsesTenantEventRate(t *testing.T) {
	e := setup(t, nil)
	ctx := context.Background()
	a := alert("tokens", anomaly.MetricUsage, anomaly.StatusFiring, 90000) // 90k tokens/min
	a.Kind = "ai_tokens"
	a.Labels[anomaly.LabelTenantEventsPerMin] = "300" // 5 events/s
	if err := e.eng.Handle(ctx, a); err != nil {
		t.Fatal(err)
	}
	d, err := e.pub.Get(ctx, "tokens", limiter.ScopeAll)
	if err != nil {
		t.Fatal(err)
	}
	if d.RatePerSec != 10 {
		t.Fatalf("throttle rate %v/s, want 2 x 5 events/s = 10/s", d.RatePerSec)
	}
}

// TestThrottleReasonNamesTheSpikes: a tenant spiking in two kinds is
// throttled once; the reason names the rate it is throttled to and every
// kind that spiked, the furthest above its baseline first, with rounded
// figures, whichever alert fired first.
func TestThrottleReasonNamesTheSpikes(t *testing.T) {
	e := setup(t, nil)
	ctx := context.Background()
	db := alert("noisy", anomaly.MetricUsage, anomaly.StatusFiring, 103.25)
	db.Kind, db.Observed, db.Ratio = "db_query", 402.6812, 3.9
	db.Fingerprint = anomaly.Fingerprint("noisy", anomaly.MetricUsage, "db_query", "", db.StartsAt)
	db.Labels[anomaly.LabelTenantEventsPerMin] = "357.39" // 2 x 5.9565/s = 11.913/s
	api := alert("noisy", anomaly.MetricUsage, anomaly.StatusFiring, 298.27)
	api.Kind, api.Observed, api.Ratio = "api_request", 1521.177, 5.1
	api.Fingerprint = anomaly.Fingerprint("noisy", anomaly.MetricUsage, "api_request", "", api.StartsAt)
	api.Labels[anomaly.LabelTenantEventsPerMin] = "357.39"
	for _, a := range []anomaly.Alert{db, api} {
		if err := e.eng.Handle(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	d, err := e.pub.Get(ctx, "noisy", limiter.ScopeAll)
	if err != nil {
		t.Fatal(err)
	}
	want := "throttled to 11.9/s: api_request at 5.1x baseline (1521 vs 298 per min), db_query at 3.9x baseline (403 vs 103 per min)"
	if d.RatePerSec != 11.9 || d.Reason != want || d.AnomalyID != api.Fingerprint {
		t.Fatalf("got rate %v, reason %q, anomaly_id %s;\nwant 11.9, %q, %s", d.RatePerSec, d.Reason, d.AnomalyID, want, api.Fingerprint)
	}
	// The spend cap's throttle says what it throttles to as well.
	capAlert := alert("capped", anomaly.MetricSpendCap, anomaly.StatusFiring, 0)
	capAlert.Labels["threshold"] = "100"
	capAlert.Summary = "tenant capped reached 100% of its monthly spend cap (5000.00 of 5000.00): degrade gracefully"
	if err := e.eng.Handle(ctx, capAlert); err != nil {
		t.Fatal(err)
	}
	d, err = e.pub.Get(ctx, "capped", limiter.ScopeAll)
	if err != nil || !strings.HasPrefix(d.Reason, "throttled to 5/s: tenant capped reached 100%") {
		t.Fatalf("spend cap reason: got %q (%v), want it to start with the rate", d.Reason, err)
	}
}
