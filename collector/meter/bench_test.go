package meter_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector"
	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/meter"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/limiter"
)

// discard is a ResponseWriter that keeps nothing, so the benchmarks time
// the handlers and not a recorder.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

// pair times a bare and an instrumented operation in the same run,
// alternating chunks, and reports each one's ns and allocations per op and
// their difference. The instrumented side's queued records are handed to
// the emitter and published between chunks, with the timer stopped (after
// reports that background work per event).
type pair struct {
	bareNs, instNs         time.Duration
	bareAllocs, instAllocs uint64
	afterNs                time.Duration
	n                      int
}

func (p *pair) run(b *testing.B, bare, inst func(i int), after func()) {
	const chunk = 1024
	var ms runtime.MemStats
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += chunk {
		n := min(chunk, b.N-done)
		runtime.ReadMemStats(&ms)
		a0 := ms.Mallocs
		t0 := time.Now()
		for i := range n {
			bare(done + i)
		}
		t1 := time.Now()
		runtime.ReadMemStats(&ms)
		a1 := ms.Mallocs
		t2 := time.Now()
		for i := range n {
			inst(done + i)
		}
		t3 := time.Now()
		runtime.ReadMemStats(&ms)
		p.bareNs += t1.Sub(t0)
		p.instNs += t3.Sub(t2)
		p.bareAllocs += a1 - a0
		p.instAllocs += ms.Mallocs - a1
		p.n += n
		if after != nil {
			b.StopTimer()
			t4 := time.Now()
			after()
			p.afterNs += time.Since(t4)
			b.StartTimer()
		}
	}
	b.StopTimer()
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(p.n) }
	b.ReportMetric(per(p.bareNs), "bare-ns/op")
	b.ReportMetric(per(p.instNs), "inst-ns/op")
	b.ReportMetric(per(p.instNs)-per(p.bareNs), "added-ns/op")
	b.ReportMetric(float64(p.bareAllocs)/float64(p.n), "bare-allocs/op")
	b.ReportMetric(float64(p.instAllocs)/float64(p.n), "inst-allocs/op")
	b.ReportMetric((float64(p.instAllocs)-float64(p.bareAllocs))/float64(p.n), "added-allocs/op")
	if after != nil {
		b.ReportMetric(per(p.afterNs), "background-ns/event")
	}
}

// benchEmitter is a real emitter on an embedded NATS server with the
// usage stream.
func benchEmitter(b *testing.B) *emit.Emitter {
	b.Helper()
	srv := testenv.NATS(b)
	nc := connect(b, srv.URL)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	if err := collector.EnsureStreams(context.Background(), js, collector.DefaultConfig()); err != nil {
		b.Fatal(err)
	}
	em, err := emit.New(nc, emit.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = em.Close(context.Background()) })
	return em
}

// benchMeter is a Meter whose queue is handed over only by flush: nothing
// of the emitting runs while a chunk is timed.
func benchMeter(b *testing.B, em meter.Emitter, lim *limiter.Limiter, flushEvery time.Duration) (*meter.Meter, func()) {
	b.Helper()
	cfg := meter.DefaultConfig()
	cfg.Service = "bench"
	cfg.HTTP.Tenant = limiter.HeaderTenant("X-Tenant-ID")
	cfg.QueueSize, cfg.FlushInterval = 4096, flushEvery
	m, err := meter.New(cfg, meter.Deps{Emitter: em, Limiter: lim, Logger: quietLog()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Close(context.Background()) })
	flush := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := m.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		if e, ok := em.(*emit.Emitter); ok {
			if err := e.Flush(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	return m, flush
}

func benchMux() *http.ServeMux {
	mux := http.NewServeMux()
	ok := []byte(`{"ok":true}`)
	for _, p := range []string{"GET /v1/invoices", "POST /v1/invoices", "GET /v1/customers/{id}", "/healthz"} {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) { w.Write(ok) })
	}
	mux.HandleFunc("GET /v1/invoices/{id}", func(w http.ResponseWriter, r *http.Request) { w.Write(ok) })
	return mux
}

// BenchmarkMiddleware times a ServeMux bare and wrapped by the Handler
// (tenant from a header, the limiter's check, the context, the metering
// record), in the same run. The emitting is included: every request is
// queued, then handed to a real emitter and published to JetStream
// between timed chunks (background-ns/event). Cases: a tenant without a
// decision (the common case), a throttled tenant (RateLimit headers), and
// an emitter whose buffer is full under the drop policy (records dropped
// and counted while the meter's goroutine keeps handing them over).
func BenchmarkMiddleware(b *testing.B) {
	cases := []struct {
		name   string
		tenant string
		full   bool
	}{
		{"no_decision", "acme", false},
		{"throttled", "noisy", false},
		{"emitter_full", "acme", true},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			lim, err := limiter.New(limiter.DefaultConfig(), limiter.Deps{})
			if err != nil {
				b.Fatal(err)
			}
			defer lim.Close()
			now := time.Now()
			if err := lim.Apply(limiter.Decision{TenantID: "noisy", Scope: limiter.ScopeAll, Action: limiter.ActionThrottle,
				RatePerSec: 1e9, Burst: 1e9, IssuedAt: now, ExpiresAt: now.Add(time.Hour), Source: limiter.SourceManual}); err != nil {
				b.Fatal(err)
			}
			var m *meter.Meter
			var flush func()
			if c.full {
				em := fullEmitter(b, emit.Drop, 16)
				m, _ = benchMeter(b, em, lim, time.Millisecond)
			} else {
				m, flush = benchMeter(b, benchEmitter(b), lim, time.Hour)
			}
			mux := benchMux()
			h := m.Handler(mux)
			req := httptest.NewRequest("GET", "/v1/invoices/42", nil)
			req.Header.Set("X-Tenant-ID", c.tenant)
			w := &discard{h: http.Header{}}
			var p pair
			p.run(b, func(int) { mux.ServeHTTP(w, req) }, func(int) { h.ServeHTTP(w, req) }, flush)
			if c.full {
				b.ReportMetric(float64(m.Dropped())/float64(p.n), "dropped/op")
			} else if m.Dropped() != 0 {
				b.Fatalf("%d records dropped", m.Dropped())
			}
		})
	}
}

// stub answers every call at once with the same response: the benchmark
// times the Transport, not a network.
type stub struct{ resp *http.Response }

func (s stub) RoundTrip(*http.Request) (*http.Response, error) { return s.resp, nil }

// BenchmarkTransport times a RoundTripper bare and wrapped by Transport
// (identity from the context, the tenant's breaker Allow and Report, the
// metering record), in the same run, with the emitting included as in
// BenchmarkMiddleware.
func BenchmarkTransport(b *testing.B) {
	lim, err := limiter.New(limiter.DefaultConfig(), limiter.Deps{})
	if err != nil {
		b.Fatal(err)
	}
	defer lim.Close()
	m, flush := benchMeter(b, benchEmitter(b), lim, time.Hour)
	base := stub{resp: &http.Response{StatusCode: 200, Body: http.NoBody}}
	rt := m.Transport("payments", base)
	ctx := event.WithIdentity(context.Background(), event.Identity{Tenant: "acme", User: "u_42"})
	req, _ := http.NewRequestWithContext(ctx, "POST", "https://api.example.com/v1/charges", nil)
	var p pair
	p.run(b, func(int) { _, _ = base.RoundTrip(req) }, func(int) { _, _ = rt.RoundTrip(req) }, flush)
	if m.Dropped() != 0 {
		b.Fatalf("%d records dropped", m.Dropped())
	}
}
