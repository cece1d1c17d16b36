package metrics

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tenantguard/tenantguard/collector/event"
)

// fakeClock is a settable clock for TTL and ranking tests.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *fakeClock                   { return &fakeClock{t: time.Unix(1_800_000_000, 0)} }

func newTest(t testing.TB, cfg Config) (*Metrics, *prometheus.Registry, *fakeClock) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := New(cfg, reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	clk := newClock()
	m.now = clk.now
	t.Cleanup(func() { m.Close() })
	return m, reg, clk
}

func ev(tenant, kind string, qty, latencyMs float64, isErr bool) *event.Event {
	return &event.Event{ID: "x", TenantID: tenant, Kind: kind, Quantity: qty, LatencyMs: latencyMs, Error: isErr}
}

// sample is one scraped series value.
type sample struct {
	name   string
	labels map[string]string
	value  float64 // counter/gauge value, or histogram count
	hist   *dto.Histogram
}

func scrape(t testing.TB, reg *prometheus.Registry) []sample {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var out []sample
	for _, mf := range mfs {
		for _, mt := range mf.Metric {
			s := sample{name: mf.GetName(), labels: map[string]string{}}
			for _, lp := range mt.Label {
				s.labels[lp.GetName()] = lp.GetValue()
			}
			switch {
			case mt.Counter != nil:
				s.value = mt.Counter.GetValue()
			case mt.Gauge != nil:
				s.value = mt.Gauge.GetValue()
			case mt.Histogram != nil:
				s.value = float64(mt.Histogram.GetSampleCount())
				s.hist = mt.Histogram
			}
			out = append(out, s)
		}
	}
	return out
}

// series keys samples of name by their tenant (and kind) labels.
func series(samples []sample, name string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range samples {
		if s.name != name {
			continue
		}
		k := s.labels["tenant"]
		if kind, ok := s.labels["kind"]; ok {
			k += "/" + kind
		}
		out[k] = s.value
	}
	return out
}

func sum(m map[string]float64) float64 {
	var s float64
	for _, v := range m {
		s += v
	}
	return s
}

func TestCountsPerTenant(t *testing.T) {
	m, reg, _ := newTest(t, DefaultConfig())
	for i := 0; i < 10; i++ {
		m.Observe(ev("acme", event.KindAPIRequest, 1, 20, i%5 == 0), 0.01)
	}
	m.Observe(ev("acme", event.KindAITokens, 1500, 0, false), 0.5)
	m.Observe(ev("globex", event.KindAPIRequest, 1, 2000, true), 0.25)
	s := scrape(t, reg)

	events := series(s, "tenantguard_tenant_events_total")
	want := map[string]float64{"acme/api_request": 10, "acme/ai_tokens": 1, "globex/api_request": 1}
	for k, v := range want {
		if events[k] != v {
			t.Errorf("events[%s] = %v, want %v", k, events[k], v)
		}
	}
	if len(events) != len(want) {
		t.Errorf("events series = %v, want exactly %v (no overflow while under K)", events, want)
	}
	if q := series(s, "tenantguard_tenant_quantity_total")["acme/ai_tokens"]; q != 1500 {
		t.Errorf("quantity acme/ai_tokens = %v, want 1500", q)
	}
	errs := series(s, "tenantguard_tenant_errors_total")
	if errs["acme"] != 2 || errs["globex"] != 1 {
		t.Errorf("errors = %v, want acme 2 globex 1", errs)
	}
	cost := series(s, "tenantguard_tenant_cost_total")
	if math.Abs(cost["acme"]-0.6) > 1e-9 || cost["globex"] != 0.25 {
		t.Errorf("cost = %v, want acme 0.6 globex 0.25", cost)
	}
	lat := series(s, "tenantguard_tenant_request_duration_seconds")
	if lat["acme"] != 10 || lat["globex"] != 1 {
		t.Errorf("latency counts = %v, want acme 10 (api_request only) globex 1", lat)
	}
	for _, x := range s {
		if x.name == "tenantguard_tenant_request_duration_seconds" && x.labels["tenant"] == "acme" {
			if got := x.hist.GetSampleSum(); math.Abs(got-0.2) > 1e-9 {
				t.Errorf("acme latency sum = %v s, want 0.2", got)
			}
			for _, b := range x.hist.Bucket {
				if b.GetUpperBound() == 0.025 && b.GetCumulativeCount() != 10 {
					t.Errorf("acme bucket le=0.025 = %d, want 10", b.GetCumulativeCount())
				}
				if b.GetUpperBound() == 0.01 && b.GetCumulativeCount() != 0 {
					t.Errorf("acme bucket le=0.01 = %d, want 0", b.GetCumulativeCount())
				}
			}
			if x.hist.Schema != nil {
				t.Errorf("native buckets present with factor 0")
			}
		}
	}
}

// TestOverflowSumsAndMonotonic drives tenants in and out of the top-K and
// checks after every scrape that the sum over tenant equals everything
// observed and that no series ever went down.
func TestOverflowSumsAndMonotonic(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxTenantSeries = 3
	m, reg, clk := newTest(t, cfg)
	var total float64
	var totalCost float64
	last := map[string]float64{}
	check := func(step string) {
		t.Helper()
		s := scrape(t, reg)
		events := series(s, "tenantguard_tenant_events_total")
		if got := sum(events); got != total {
			t.Fatalf("%s: sum over tenant = %v, want %v (%v)", step, got, total, events)
		}
		if got := sum(series(s, "tenantguard_tenant_cost_total")); math.Abs(got-totalCost) > 1e-6 {
			t.Fatalf("%s: cost sum = %v, want %v", step, got, totalCost)
		}
		own := 0
		for k := range series(s, "tenantguard_tenant_errors_total") {
			if k != OverflowTenant {
				own++
			}
		}
		if own > cfg.MaxTenantSeries {
			t.Fatalf("%s: %d tenants have own series, K = %d", step, own, cfg.MaxTenantSeries)
		}
		for _, name := range []string{"tenantguard_tenant_events_total", "tenantguard_tenant_cost_total",
			"tenantguard_tenant_quantity_total", "tenantguard_tenant_request_duration_seconds"} {
			for k, v := range series(s, name) {
				key := name + "|" + k
				if prev, ok := last[key]; ok && v < prev {
					t.Fatalf("%s: %s went down: %v -> %v", step, key, prev, v)
				}
				last[key] = v
			}
		}
		// Series that vanished are forgotten: a later reappearance is a new series.
		present := map[string]bool{}
		for _, name := range []string{"tenantguard_tenant_events_total", "tenantguard_tenant_cost_total",
			"tenantguard_tenant_quantity_total", "tenantguard_tenant_request_duration_seconds"} {
			for k := range series(s, name) {
				present[name+"|"+k] = true
			}
		}
		for k := range last {
			if !present[k] {
				delete(last, k)
			}
		}
	}
	send := func(tenant string, n int) {
		for i := 0; i < n; i++ {
			m.Observe(ev(tenant, event.KindAPIRequest, 1, 5, false), 0.001)
			total++
			totalCost += 0.001
		}
	}
	// Phase 1: 6 tenants with different activity; only 3 get series.
	for i, n := range []int{50, 40, 30, 20, 10, 5} {
		send(fmt.Sprintf("t%d", i), n)
	}
	check("phase 1")
	s := series(scrape(t, reg), "tenantguard_tenant_events_total")
	if s["t0/api_request"] != 50 || s[OverflowTenant+"/api_request"] == 0 {
		t.Fatalf("phase 1: want t0 own series = 50 and a non-empty overflow, got %v", s)
	}
	// Phase 2: t5 becomes very noisy and must get its own series.
	for step := 0; step < 5; step++ {
		clk.advance(time.Minute)
		send("t5", 500)
		send("t1", 1)
		check(fmt.Sprintf("phase 2 step %d", step))
	}
	s = series(scrape(t, reg), "tenantguard_tenant_events_total")
	if _, ok := s["t5/api_request"]; !ok {
		t.Fatalf("phase 2: noisy t5 has no own series: %v", s)
	}
	// Phase 3: everyone but t5 goes idle past the TTL; their series go.
	clk.advance(cfg.IdleSeriesTTL / 2)
	send("t5", 1)
	check("phase 3a")
	clk.advance(cfg.IdleSeriesTTL/2 + time.Second)
	send("t5", 1)
	check("phase 3b")
	s = series(scrape(t, reg), "tenantguard_tenant_events_total")
	for k := range s {
		if !strings.HasPrefix(k, "t5/") && !strings.HasPrefix(k, OverflowTenant) {
			t.Errorf("phase 3: idle series %s still exported", k)
		}
	}
	m.mu.RLock()
	tracked := len(m.tenants)
	m.mu.RUnlock()
	if tracked != 1 {
		t.Errorf("phase 3: %d tenants tracked after TTL, want 1", tracked)
	}
	// Phase 4: a forgotten tenant comes back.
	send("t0", 7)
	check("phase 4")
	if got := series(scrape(t, reg), "tenantguard_tenant_events_total")["t0/api_request"]; got != 7 {
		t.Errorf("phase 4: returning t0 = %v, want 7 (a fresh series)", got)
	}
}

func TestHysteresisNoFlap(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxTenantSeries = 1
	m, reg, clk := newTest(t, cfg)
	for i := 0; i < 100; i++ {
		m.Observe(ev("a", "job_run", 1, 0, false), 0)
	}
	scrape(t, reg)
	// b is slightly busier than a: not enough to displace it.
	for step := 0; step < 5; step++ {
		clk.advance(30 * time.Second)
		for i := 0; i < 100; i++ {
			m.Observe(ev("a", "job_run", 1, 0, false), 0)
		}
		for i := 0; i < 120; i++ {
			m.Observe(ev("b", "job_run", 1, 0, false), 0)
		}
		s := series(scrape(t, reg), "tenantguard_tenant_events_total")
		if _, ok := s["b/job_run"]; ok {
			t.Fatalf("step %d: b displaced a at 1.2x activity; hysteresis is %vx", step, hysteresis)
		}
	}
}

func TestInvalidTenantCountsInOverflow(t *testing.T) {
	m, reg, _ := newTest(t, DefaultConfig())
	m.Observe(ev("has.dot", event.KindAPIRequest, 1, 1, false), 0)
	m.Observe(ev("ok", event.KindAPIRequest, 1, 1, false), 0)
	s := series(scrape(t, reg), "tenantguard_tenant_events_total")
	if s[OverflowTenant+"/api_request"] != 1 || s["ok/api_request"] != 1 || len(s) != 2 {
		t.Errorf("got %v, want ok=1 and overflow=1", s)
	}
}

func TestGauges(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxTenantSeries = 1
	m, reg, _ := newTest(t, cfg)
	m.SetSpendCapSource(func(tenant string) (float64, bool) { return map[string]float64{"big": 100, "small": 50}[tenant], true })
	m.Observe(ev("big", event.KindAPIRequest, 1, 1, false), 0)
	scrape(t, reg) // big takes the one slot
	m.Observe(ev("small", event.KindAPIRequest, 1, 1, false), 0)
	m.SetActiveAnomalies("big", 2)
	m.SetActiveAnomalies("small", 3)
	m.SetThrottled("small", true)
	m.SetThrottled("big", true)
	m.SetThrottled("big", false)
	m.SetActiveAnomalies("bad tenant", 9)
	s := scrape(t, reg)
	if got := series(s, "tenantguard_tenant_active_anomalies"); got["big"] != 2 || got[OverflowTenant] != 3 || len(got) != 2 {
		t.Errorf("anomalies = %v, want big 2, overflow 3", got)
	}
	if got := series(s, "tenantguard_tenant_throttled"); got["big"] != 0 || got[OverflowTenant] != 1 {
		t.Errorf("throttled = %v, want big 0, overflow 1", got)
	}
	if got := series(s, "tenantguard_tenant_spend_cap"); got["big"] != 100 || len(got) != 1 {
		t.Errorf("spend cap = %v, want big 100 only (small is in the overflow)", got)
	}
}

func TestNativeHistogram(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NativeHistogramBucketFactor = 1.1
	cfg.NativeHistogramMaxBuckets = 20
	m, reg, _ := newTest(t, cfg)
	var n uint64
	for v := 0.0; v < 5000; v += 7.3 {
		m.Observe(ev("acme", event.KindAPIRequest, 1, v, false), 0)
		n++
	}
	for _, x := range scrape(t, reg) {
		if x.name != "tenantguard_tenant_request_duration_seconds" {
			continue
		}
		h := x.hist
		if h.Schema == nil {
			t.Fatal("no native schema with factor 1.1")
		}
		var total uint64 = h.GetZeroCount()
		var cnt int64
		nb := 0
		for _, d := range h.PositiveDelta {
			cnt += d
			if cnt < 0 {
				t.Fatalf("negative bucket count")
			}
			total += uint64(cnt)
			nb++
		}
		if total != n || h.GetSampleCount() != n {
			t.Errorf("native buckets hold %d, count %d, want %d", total, h.GetSampleCount(), n)
		}
		if nb > cfg.NativeHistogramMaxBuckets {
			t.Errorf("%d native buckets, max %d", nb, cfg.NativeHistogramMaxBuckets)
		}
		if h.GetSchema() >= 3 {
			t.Errorf("schema %d: want it reduced below 3 by the bucket cap", h.GetSchema())
		}
		if len(h.Bucket) != len(cfg.LatencyBuckets) {
			t.Errorf("%d classic buckets, want %d alongside native", len(h.Bucket), len(cfg.LatencyBuckets))
		}
		return
	}
	t.Fatal("no latency histogram")
}

func TestNativeKey(t *testing.T) {
	for _, schema := range []int32{-2, 0, 1, 3, 8} {
		var bounds []float64
		if schema > 0 {
			bounds = boundsFor(schema)
		}
		base := math.Exp2(math.Exp2(-float64(schema)))
		for _, v := range []float64{1e-6, 0.001, 0.37, 1, 1.5, 2, 3, 1024, 1e5} {
			k := nativeKey(v, schema, bounds)
			lo, hi := math.Pow(base, float64(k-1)), math.Pow(base, float64(k))
			if !(v > lo*(1-1e-12) && v <= hi*(1+1e-12)) {
				t.Errorf("schema %d: v=%v got key %d covering (%v, %v]", schema, v, k, lo, hi)
			}
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	bad := Config{MaxTenantSeries: 0, IdleSeriesTTL: -1, LatencyBuckets: []float64{1, 0.5}, NativeHistogramBucketFactor: 0.5}
	err := bad.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, field := range []string{"exporter.max_tenant_series", "exporter.idle_series_ttl", "exporter.activity_window",
		"exporter.latency_buckets", "exporter.native_histogram_bucket_factor"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not name %s", err, field)
		}
	}
	if _, err := New(bad, prometheus.NewRegistry()); err == nil {
		t.Error("New accepted a bad config")
	}
	if _, err := New(DefaultConfig(), nil); err == nil {
		t.Error("New accepted a nil registerer")
	}
}

func TestCloseUnregisters(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(DefaultConfig(), reg)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	m.Close()
	if _, err := New(DefaultConfig(), reg); err != nil {
		t.Fatalf("register after Close: %v", err)
	}
}

func TestObserveZeroAlloc(t *testing.T) {
	m, _, _ := newTest(t, DefaultConfig())
	e := ev("acme", event.KindAPIRequest, 1, 12, false)
	m.Observe(e, 0.1)
	if a := testing.AllocsPerRun(1000, func() { m.Observe(e, 0.1) }); a != 0 {
		t.Errorf("Observe allocates %v per call, want 0", a)
	}
}

// TestConcurrentObserveAndScrape runs Observe, setters and scrapes at once
// (run with -race) and checks that no event is lost across evictions.
func TestConcurrentObserveAndScrape(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxTenantSeries = 4
	cfg.IdleSeriesTTL = time.Millisecond
	reg := prometheus.NewRegistry()
	m, err := New(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	const workers, perWorker = 4, 3000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 50; i++ {
			if _, err := reg.Gather(); err != nil {
				t.Errorf("gather: %v", err)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				tn := fmt.Sprintf("t%d", (i*7+w)%20)
				m.Observe(ev(tn, event.KindAPIRequest, 1, 3, i%4 == 0), 0.5)
				if i%100 == 0 {
					m.SetActiveAnomalies(tn, i%3)
					m.SetThrottled(tn, i%2 == 0)
				}
			}
		}(w)
	}
	wg.Wait()
	<-done
	s := scrape(t, reg)
	if got := sum(series(s, "tenantguard_tenant_events_total")); got != workers*perWorker {
		t.Errorf("sum of events = %v, want %d", got, workers*perWorker)
	}
	if got := sum(series(s, "tenantguard_tenant_cost_total")); got != 0.5*workers*perWorker {
		t.Errorf("sum of cost = %v, want %v", got, 0.5*workers*perWorker)
	}
	if got := sum(series(s, "tenantguard_tenant_request_duration_seconds")); got != workers*perWorker {
		t.Errorf("histogram count = %v, want %d", got, workers*perWorker)
	}
}

// TestSpendCapsForgottenWithTenants: a tenant's cap goes when the tenant
// is forgotten for idleness, so churning tenants do not grow memory
// without bound; the cap source gives a returning tenant its cap again.
func TestSpendCapsForgottenWithTenants(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxTenantSeries = 10
	m, reg, clk := newTest(t, cfg)
	m.SetSpendCapSource(func(tenant string) (float64, bool) { return 42, tenant != "nocap" })
	for i := range 1000 {
		m.Observe(ev(fmt.Sprintf("churn-%04d", i), event.KindAPIRequest, 1, 1, false), 0)
	}
	scrape(t, reg)
	if got := len(series(scrape(t, reg), "tenantguard_tenant_spend_cap")); got != 10 {
		t.Fatalf("%d spend cap series, want one per member (10)", got)
	}
	clk.advance(cfg.IdleSeriesTTL + time.Second)
	scrape(t, reg)
	m.mu.RLock()
	tracked := len(m.tenants)
	m.mu.RUnlock()
	if tracked != 0 {
		t.Fatalf("after the idle TTL: %d tenants tracked; want 0", tracked)
	}
	m.Observe(ev("churn-0001", event.KindAPIRequest, 1, 1, false), 0)
	m.Observe(ev("nocap", event.KindAPIRequest, 1, 1, false), 0)
	scrape(t, reg)
	got := series(scrape(t, reg), "tenantguard_tenant_spend_cap")
	if got["churn-0001"] != 42 || len(got) != 1 {
		t.Fatalf("spend caps %v, want churn-0001 42 from the source only", got)
	}
}

// TestForgetUnownedGauges: two replicas both saw a tenant (before it moved
// from one to the other). Once the old owner forgets it, summing each
// gauge over both replicas counts the tenant once; the counters stay on
// both, and their sum is every event.
func TestForgetUnownedGauges(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxTenantSeries = 1
	type replica struct {
		m   *Metrics
		reg *prometheus.Registry
	}
	var rs []replica
	for range 2 {
		m, reg, _ := newTest(t, cfg)
		m.SetSpendCapSource(func(string) (float64, bool) { return 100, true })
		m.Observe(ev("acme", event.KindAPIRequest, 1, 1, false), 0)
		scrape(t, reg) // acme takes the one slot
		m.Observe(ev("beta", event.KindAPIRequest, 1, 1, false), 0)
		m.SetActiveAnomalies("acme", 2)
		m.SetThrottled("acme", true)
		m.SetActiveAnomalies("beta", 1)
		m.SetThrottled("beta", true)
		rs = append(rs, replica{m, reg})
	}
	rs[0].m.Forget(func(id string) bool { return id != "acme" && id != "beta" })
	rs[1].m.Forget(func(id string) bool { return id == "acme" || id == "beta" })
	rs[0].m.SetActiveAnomalies("acme", 5) // a late alert of the old owner
	total := map[string]map[string]float64{}
	for _, r := range rs {
		s := scrape(t, r.reg)
		for _, name := range []string{"tenantguard_tenant_active_anomalies", "tenantguard_tenant_throttled", "tenantguard_tenant_spend_cap", "tenantguard_tenant_events_total"} {
			if total[name] == nil {
				total[name] = map[string]float64{}
			}
			for k, v := range series(s, name) {
				total[name][k] += v
			}
		}
	}
	for _, c := range []struct {
		name, key string
		want      float64
	}{
		{"tenantguard_tenant_active_anomalies", "acme", 2},
		{"tenantguard_tenant_active_anomalies", OverflowTenant, 1},
		{"tenantguard_tenant_throttled", "acme", 1},
		{"tenantguard_tenant_throttled", OverflowTenant, 1},
		{"tenantguard_tenant_spend_cap", "acme", 100},
		{"tenantguard_tenant_events_total", "acme/" + event.KindAPIRequest, 2},
		{"tenantguard_tenant_events_total", OverflowTenant + "/" + event.KindAPIRequest, 2},
	} {
		if got := total[c.name][c.key]; got != c.want {
			t.Errorf("sum over replicas of %s{%s}: got %v, want %v", c.name, c.key, got, c.want)
		}
	}

	// Owning every tenant again exports the throttle the replica kept.
	rs[0].m.Forget(nil)
	if got := series(scrape(t, rs[0].reg), "tenantguard_tenant_throttled"); got["acme"] != 1 {
		t.Errorf("throttled after owning acme again: got %v, want acme 1", got)
	}
}
