package limiter

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

// benchLimiter returns a limiter holding n throttled tenants t0..t<n-1> at
// a rate high enough that Allow mostly succeeds, like the bare baseline.
func benchLimiter(b *testing.B, n int) (*Limiter, []string) {
	b.Helper()
	l := newLocal(b, nil, Deps{})
	names := make([]string, n)
	changes := make(map[string]*Decision, n)
	for i := range names {
		names[i] = "t" + strconv.Itoa(i)
		d := throttle(names[i], 1e9, 1e9, SourceManual, time.Hour)
		changes[names[i]] = &d
	}
	l.mu.Lock()
	l.applyLocked(changes, time.Now())
	l.mu.Unlock()
	return l, names
}

// BenchmarkAllowNoDecision: the common case, a tenant without a decision,
// while 1000 other tenants are throttled.
func BenchmarkAllowNoDecision(b *testing.B) {
	l, _ := benchLimiter(b, 1000)
	quiet := make([]string, 1024)
	for i := range quiet {
		quiet[i] = "quiet" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if !l.Allow(quiet[i&1023]) {
			b.Fatal("throttled")
		}
	}
}

// BenchmarkAllowThrottledVsBare times bare rate.Limiter.Allow and Allow of
// a throttled tenant in the same run, alternating, and reports the ratio.
func BenchmarkAllowThrottledVsBare(b *testing.B) {
	l, names := benchLimiter(b, 1000)
	bare := rate.NewLimiter(1e9, 1e9)
	tenant := names[500]
	interleaved(b, "bare", "limiter", func(_, n int) {
		for range n {
			bare.Allow()
		}
	}, func(_, n int) {
		for range n {
			l.Allow(tenant)
		}
	})
}

// BenchmarkAllow100kRandom: 100k throttled tenants accessed at random,
// against the map+RWMutex baseline in the same run.
func BenchmarkAllow100kRandom(b *testing.B) {
	l, names := benchLimiter(b, 100000)
	var mu sync.RWMutex
	base := make(map[string]*rate.Limiter, len(names))
	for _, n := range names {
		base[n] = rate.NewLimiter(1e9, 1e9)
	}
	idx := make([]string, 1<<20)
	for i := range idx {
		idx[i] = names[rand.IntN(len(names))]
	}
	interleaved(b, "map+rwmutex", "limiter", func(done, n int) {
		off := done & (len(idx) - 1)
		for i := range n {
			mu.RLock()
			lim := base[idx[(off+i)&(len(idx)-1)]]
			mu.RUnlock()
			lim.Allow()
		}
	}, func(done, n int) {
		off := done & (len(idx) - 1)
		for i := range n {
			l.Allow(idx[(off+i)&(len(idx)-1)])
		}
	})
}

// BenchmarkAllowScaling measures the throughput of 2 goroutines against
// one, for the no-decision path and for 100k throttled tenants at random.
func BenchmarkAllowScaling(b *testing.B) {
	if runtime.GOMAXPROCS(0) < 2 {
		b.Skip("needs 2 CPUs")
	}
	l, names := benchLimiter(b, 100000)
	quiet := make([]string, 1024)
	for i := range quiet {
		quiet[i] = "quiet" + strconv.Itoa(i)
	}
	// The hardware baseline: a read-only map of bare rate.Limiters, no
	// locks at all, so whatever does not scale here is the machine.
	bare := make(map[string]*rate.Limiter, len(names))
	for _, n := range names {
		bare[n] = rate.NewLimiter(1e9, 1e9)
	}
	for _, c := range []struct {
		name    string
		tenants []string
		allow   func(string) bool
		ops     int
	}{
		{"no_decision", quiet, l.Allow, 20_000_000}, // long enough that goroutine start-up skew does not count
		{"throttled_100k", names, l.Allow, 300_000},
		{"bare_map_100k", names, func(t string) bool { return bare[t].Allow() }, 300_000},
	} {
		b.Run(c.name, func(b *testing.B) {
			run := func(g, perG int) float64 {
				var wg sync.WaitGroup
				var start sync.WaitGroup
				start.Add(1)
				var sink atomic.Int64
				for w := range g {
					wg.Add(1)
					go func() {
						defer wg.Done()
						r := rand.New(rand.NewPCG(uint64(w), 7))
						idx := make([]int, 4096)
						for i := range idx {
							idx[i] = r.IntN(len(c.tenants))
						}
						start.Wait()
						ok := 0
						for i := range perG {
							if c.allow(c.tenants[idx[i&4095]]) {
								ok++
							}
						}
						sink.Add(int64(ok))
					}()
				}
				t0 := time.Now()
				start.Done()
				wg.Wait()
				return float64(g*perG) / time.Since(t0).Seconds()
			}
			per := max(b.N, c.ops)
			var one, two []float64
			for range 5 {
				one = append(one, run(1, per))
				two = append(two, run(2, per))
			}
			b.ReportMetric(median(one), "1g-ops/s")
			b.ReportMetric(median(two), "2g-ops/s")
			b.ReportMetric(median(two)/median(one), "speedup")
		})
	}
}

// BenchmarkPropagation50 puts decisions and measures, in the same run and
// for the same puts, the delivery to 50 raw KV watchers and the time until
// 50 limiter instances have applied them. It reports p50/p99 of both and
// the p99 ratio.
func BenchmarkPropagation50(b *testing.B) {
	srv := testenv.NATS(b)
	pub := newPublisher(b, srv.URL)
	const n = 50
	ins := make([]*instance, n)
	var mu sync.Mutex
	applied := map[int][]time.Time{} // round -> apply times
	var round atomic.Int64
	round.Store(-1)
	for i := range ins {
		ins[i] = start(b, srv.URL, nil)
	}
	testenv.Eventually(b, 10*time.Second, "50 instances", func() bool { return ins[n-1].Instances() == n })
	for _, in := range ins {
		in.mu.Lock()
		in.onApply = func(keys []string) {
			for _, k := range keys {
				if k == "prop" {
					now := time.Now()
					r := int(round.Load())
					mu.Lock()
					applied[r] = append(applied[r], now)
					mu.Unlock()
				}
			}
		}
		in.mu.Unlock()
	}
	raw := map[int][]time.Time{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range n {
		js, err := jetstream.New(connect(b, srv.URL))
		if err != nil {
			b.Fatal(err)
		}
		kv, err := js.KeyValue(ctx, DecisionsBucketConfig().Bucket)
		if err != nil {
			b.Fatal(err)
		}
		w, err := kv.Watch(ctx, "prop", jetstream.UpdatesOnly())
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			for e := range w.Updates() {
				if e == nil {
					continue
				}
				now := time.Now()
				r := int(round.Load())
				mu.Lock()
				raw[r] = append(raw[r], now)
				mu.Unlock()
			}
		}()
	}
	rounds := max(b.N, 100)
	var rawLat, limLat []float64
	b.ResetTimer()
	for r := range rounds {
		round.Store(int64(r))
		d := throttle("prop", float64(100+r), 100, SourceManual, time.Hour)
		t0 := time.Now()
		if _, err := pub.Put(ctx, d); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			done := len(raw[r]) == n && len(applied[r]) == n
			mu.Unlock()
			if done {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("round %d: %d raw, %d applied of %d", r, len(raw[r]), len(applied[r]), n)
			}
			time.Sleep(100 * time.Microsecond)
		}
		mu.Lock()
		for _, t := range raw[r] {
			rawLat = append(rawLat, float64(t.Sub(t0).Microseconds())/1000)
		}
		for _, t := range applied[r] {
			limLat = append(limLat, float64(t.Sub(t0).Microseconds())/1000)
		}
		mu.Unlock()
		time.Sleep(2 * time.Millisecond)
	}
	b.StopTimer()
	pct := func(xs []float64, p float64) float64 {
		s := append([]float64(nil), xs...)
		sort.Float64s(s)
		return s[int(p*float64(len(s)-1))]
	}
	b.ReportMetric(pct(rawLat, 0.5), "raw-p50-ms")
	b.ReportMetric(pct(rawLat, 0.99), "raw-p99-ms")
	b.ReportMetric(pct(limLat, 0.5), "limiter-p50-ms")
	b.ReportMetric(pct(limLat, 0.99), "limiter-p99-ms")
	b.ReportMetric(pct(limLat, 0.99)/pct(rawLat, 0.99), "p99-ratio")
	for _, in := range ins {
		if r, _, ok := in.Limit("prop"); !ok || r != rate.Limit(float64(100+rounds-1)/n) {
			b.Fatalf("instance did not apply the last decision: %v %v", r, ok)
		}
	}
	_ = fmt.Sprint
}

// BenchmarkAllowUserVsTenant times Allow of a tenant with a tenant-scoped
// decision and AllowUser of a user with a user-scoped decision, in the
// same run, alternating, and reports the ratio (the budget is 1.5).
func BenchmarkAllowUserVsTenant(b *testing.B) {
	l, names := benchLimiter(b, 1000)
	changes := map[string]*Decision{}
	for i := range 1000 {
		d := throttle("u"+strconv.Itoa(i), 1e9, 1e9, SourceManual, time.Hour)
		d.Scope = UserScope("user-42")
		key, _ := d.Key()
		changes[key] = &d
	}
	l.mu.Lock()
	l.applyLocked(changes, time.Now())
	l.mu.Unlock()
	tenant, userTenant := names[500], "u500"
	interleaved(b, "tenant", "user", func(_, n int) {
		for range n {
			l.Allow(tenant)
		}
	}, func(_, n int) {
		for range n {
			l.AllowUser(userTenant, "user-42")
		}
	})
}

// BenchmarkAllowShadowVsBare times bare rate.Limiter.Allow and Allow of a
// tenant under a shadow decision at the same rate, in the same run, and
// reports the ratio (the budget is 1.3). The rate is low, so most calls
// are ones the shadow decision would reject, and counts.
func BenchmarkAllowShadowVsBare(b *testing.B) {
	l := newLocal(b, nil, Deps{})
	d := throttle("shadowed", 1000, 1000, SourceManual, time.Hour)
	d.Mode = ModeShadow
	if err := l.Apply(d); err != nil {
		b.Fatal(err)
	}
	bare := rate.NewLimiter(1000, 1000)
	interleaved(b, "bare", "limiter", func(_, n int) {
		for range n {
			bare.Allow()
		}
	}, func(_, n int) {
		for range n {
			if !l.Allow("shadowed") {
				b.Fatal("a shadow decision rejected")
			}
		}
	})
}

// interleaved times base and subject over b.N operations each, alternating
// in chunks so both see the same machine, and reports each one's ns/op
// (as baseName-ns/op and subjectName-ns/op) and subject/base as "ratio".
// Each func runs n operations starting at operation done.
func interleaved(b *testing.B, baseName, subjectName string, base, subject func(done, n int)) {
	const chunk = 1 << 14
	var baseNs, subjectNs time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += chunk {
		n := min(chunk, b.N-done)
		t0 := time.Now()
		base(done, n)
		t1 := time.Now()
		subject(done, n)
		baseNs += t1.Sub(t0)
		subjectNs += time.Since(t1)
	}
	b.ReportMetric(float64(baseNs.Nanoseconds())/float64(b.N), baseName+"-ns/op")
	b.ReportMetric(float64(subjectNs.Nanoseconds())/float64(b.N), subjectName+"-ns/op")
	b.ReportMetric(float64(subjectNs)/float64(baseNs), "ratio")
}
