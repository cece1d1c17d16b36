package metrics

import (
	"bytes"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

var benchKinds = []string{event.KindAPIRequest, event.KindAITokens, event.KindDBQuery}

// load feeds n tenants with a few events of three kinds, errors and latency.
func load(m *Metrics, n int) {
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("tenant-%04d", i)
		for j := 0; j < 10+i%7; j++ {
			k := benchKinds[j%len(benchKinds)]
			m.Observe(&event.Event{ID: "x", TenantID: id, Kind: k, Quantity: float64(j + 1),
				LatencyMs: float64(1 + (i*j)%900), Error: j%9 == 0}, 0.0001*float64(j))
		}
	}
}

// render serves /metrics once, gzipped as Prometheus asks for it or not.
func render(t testing.TB, reg prometheus.Gatherer, gzip bool) []byte {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if gzip {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}).ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body.String())
	}
	return rec.Body.Bytes()
}

// TestPromtoolCheckMetrics lints the /metrics output, overflow, native
// buckets, gauges and pg findings included; promtool must report nothing.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := testenv.Promtool(t)
	for _, native := range []float64{0, 1.1} {
		cfg := DefaultConfig()
		cfg.MaxTenantSeries = 20
		cfg.NativeHistogramBucketFactor = native
		m, reg, _ := newTest(t, cfg)
		m.SetSpendCapSource(func(string) (float64, bool) { return 100, true })
		load(m, 40)
		m.SetActiveAnomalies("tenant-0001", 1)
		m.SetThrottled("tenant-0039", true)
		body := render(t, reg, false)
		if !bytes.Contains(body, []byte(`tenant="__overflow__"`)) {
			t.Fatalf("no overflow series in output")
		}
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(body)
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Errorf("native=%v: promtool check metrics: err=%v output:\n%s", native, err, out)
		}
	}
}

// TestRender500Budget renders /metrics with 500 tenant series and requires
// the median of 7 renders to stay within the 50 ms budget. The machine is
// shared, so a busy round is measured again (best of three medians).
func TestRender500Budget(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("timing test: not with -short or -race")
	}
	m, reg, _ := newTest(t, DefaultConfig())
	load(m, 600) // 500 own series + overflow
	if got := series(scrape(t, reg), "tenantguard_tenant_cost_total"); len(got) != 501 {
		t.Fatalf("%d cost series, want 500 + overflow", len(got))
	}
	best := time.Duration(math.MaxInt64)
	var size int
	for round := 0; round < 3 && best > 50*time.Millisecond; round++ {
		var ds []time.Duration
		for i := 0; i < 7; i++ {
			start := time.Now()
			size = len(render(t, reg, false))
			ds = append(ds, time.Since(start))
		}
		sort.Slice(ds, func(a, b int) bool { return ds[a] < ds[b] })
		best = min(best, ds[len(ds)/2])
	}
	t.Logf("/metrics with 500 tenant series (+overflow): median %v, %d bytes", best, size)
	if best > 50*time.Millisecond {
		t.Errorf("render median %v, budget 50ms", best)
	}
}

func BenchmarkRender500(b *testing.B) {
	for _, gz := range []bool{false, true} {
		b.Run(fmt.Sprintf("gzip=%v", gz), func(b *testing.B) {
			m, reg, _ := newTest(b, DefaultConfig())
			load(m, 600)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				render(b, reg, gz)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/scrape")
		})
	}
}

func benchEvents(n int) []*event.Event {
	evs := make([]*event.Event, n)
	for i := range evs {
		evs[i] = &event.Event{ID: "x", TenantID: fmt.Sprintf("tenant-%04d", i%1000),
			Kind: benchKinds[i%len(benchKinds)], Quantity: 1, LatencyMs: float64(i % 700), Error: i%50 == 0}
	}
	return evs
}

// BenchmarkObserve: 1000 tenants, three kinds, one goroutine.
func BenchmarkObserve(b *testing.B) {
	m, _, _ := newTest(b, DefaultConfig())
	evs := benchEvents(4096)
	for _, e := range evs {
		m.Observe(e, 0.001)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m.Observe(evs[i&4095], 0.001)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkObserveNative is Observe with native buckets on.
func BenchmarkObserveNative(b *testing.B) {
	cfg := DefaultConfig()
	cfg.NativeHistogramBucketFactor = 1.1
	m, _, _ := newTest(b, cfg)
	evs := benchEvents(4096)
	for _, e := range evs {
		m.Observe(e, 0.001)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m.Observe(evs[i&4095], 0.001)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkObserveParallel(b *testing.B) {
	m, _, _ := newTest(b, DefaultConfig())
	evs := benchEvents(4096)
	for _, e := range evs {
		m.Observe(e, 0.001)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			m.Observe(evs[i&4095], 0.001)
			i++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkBaselineClientGolang is the raw baseline: what the same updates
// cost through client_golang vectors (label lookup each time, no top-K).
func BenchmarkBaselineClientGolang(b *testing.B) {
	reg := prometheus.NewRegistry()
	evsTotal := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "e_total", Help: "h"}, []string{"tenant", "kind"})
	qty := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "q_total", Help: "h"}, []string{"tenant", "kind"})
	cost := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total", Help: "h"}, []string{"tenant"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "h"}, []string{"tenant"})
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "l_seconds", Help: "h", Buckets: DefaultConfig().LatencyBuckets}, []string{"tenant"})
	reg.MustRegister(evsTotal, qty, cost, errs, lat)
	evs := benchEvents(4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := evs[i&4095]
		evsTotal.WithLabelValues(e.TenantID, e.Kind).Inc()
		qty.WithLabelValues(e.TenantID, e.Kind).Add(e.Quantity)
		cost.WithLabelValues(e.TenantID).Add(0.001)
		if e.Error {
			errs.WithLabelValues(e.TenantID).Inc()
		}
		if e.Kind == event.KindAPIRequest {
			lat.WithLabelValues(e.TenantID).Observe(e.LatencyMs / 1000)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
