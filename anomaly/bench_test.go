package anomaly

import (
	"context"
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/tenantguard/tenantguard/collector/event"
)

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkObserve is the collector's hot path on known tenants.
func BenchmarkObserve(b *testing.B) {
	d, err := New(DefaultConfig(), &Recorder{})
	if err != nil {
		b.Fatal(err)
	}
	evs := make([]event.Event, 1024)
	for i := range evs {
		evs[i] = event.Event{TenantID: fmt.Sprintf("tenant-%04d", i), Kind: "api_request", Time: t0,
			Quantity: 1, LatencyMs: 12.5, StatusCode: 200, Route: "GET /v1/invoices"}
		d.Observe(&evs[i], 0.001)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d.Observe(&evs[i&1023], 0.001)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkObserveRaw is the raw baseline for the ratio: the map lookup and
// lock that any per-tenant observer pays.
func BenchmarkObserveRaw(b *testing.B) {
	m := map[string]*uint64{}
	evs := make([]event.Event, 1024)
	for i := range evs {
		evs[i] = event.Event{TenantID: fmt.Sprintf("tenant-%04d", i)}
		m[evs[i].TenantID] = new(uint64)
	}
	var sh shard
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sh.mu.Lock()
		*m[evs[i&1023].TenantID]++
		sh.mu.Unlock()
	}
}

// BenchmarkCycle evaluates one full cycle of 100k tenants, each with
// usage, cost, error rate, latency, one integration's error rate and the
// spend cap (6 tenant-metric evaluations per tenant): it closes one minute
// and runs the fast path on the open one, 30 s into it, with its events.
func BenchmarkCycle(b *testing.B) { benchCycle(b, false) }

// BenchmarkCycleScales is BenchmarkCycle with tenants that have a day of
// seasonal profile (as from the warm start) and are past their warm-up:
// at 1 event per minute every tenant's usage and cost are tested on the
// 5, 15 and 60-minute windows too ("on"), the worst case; "off" is the
// same with scales.enabled false, the cost of the profile alone.
func BenchmarkCycleScales(b *testing.B) {
	b.Run("off", func(b *testing.B) { benchCycle(b, true, false) })
	b.Run("on", func(b *testing.B) { benchCycle(b, true, true) })
}

func benchCycle(b *testing.B, seasonal bool, scales ...bool) {
	const tenants = 100_000
	cfg := DefaultConfig()
	cfg.SpendCaps = map[string]float64{DefaultPlan: 1e9}
	if seasonal {
		cfg.WarmupWindows = 1
	}
	if len(scales) > 0 {
		cfg.Scales.Enabled = scales[0]
	}
	d, err := New(cfg, &Recorder{})
	if err != nil {
		b.Fatal(err)
	}
	e := event.Event{Kind: "api_request", Quantity: 1, LatencyMs: 20, Route: "GET /x"}
	ids := make([]string, tenants)
	for i := range ids {
		ids[i] = fmt.Sprintf("tenant-%06d", i)
	}
	if seasonal {
		h0 := int32(t0.Unix()/3600) - 25
		for i := range ids {
			for h := h0; h < h0+25; h++ {
				d.seedHour(ids[i], h, 60, int32(t0.Unix()/60)-1)
			}
		}
	}
	ctx := context.Background()
	minute := 0
	step := func() {
		e.Time = t0.Add(time.Duration(minute) * time.Minute)
		for i := range ids {
			e.TenantID = ids[i]
			d.Observe(&e, 0.001)
		}
		minute++
	}
	// Advance at 30 s into the minute just observed: the previous minute
	// closes (lateness 10 s) and the fast path evaluates this one.
	at := func() time.Time { return t0.Add(time.Duration(minute-1)*time.Minute + 30*time.Second) }
	for k := 0; k < 3; k++ {
		step()
		d.Advance(ctx, at())
	}
	// The machine may be shared: thread CPU time (the cycle runs on this
	// goroutine, locked to its thread) leaves out the time the thread
	// waits for a core, which wall time does not.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	b.ResetTimer()
	var total, cpu time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		step()
		b.StartTimer()
		start, startCPU := time.Now(), threadCPU()
		d.Advance(ctx, at())
		total += time.Since(start)
		cpu += threadCPU() - startCPU
	}
	per := total.Seconds() / float64(b.N)
	b.ReportMetric(per, "s/cycle")
	b.ReportMetric(tenants*6/per, "evals/s")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/cycle")
	b.ReportMetric(tenants*6/(cpu.Seconds()/float64(b.N)), "evals/cpu-s")
}

// threadCPU returns the CPU time of the calling thread.
func threadCPU() time.Duration {
	var ts syscall.Timespec
	const clockThreadCPUTime = 3 // CLOCK_THREAD_CPUTIME_ID
	if _, _, err := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTime, uintptr(unsafe.Pointer(&ts)), 0); err != 0 {
		return 0
	}
	return time.Duration(ts.Nano())
}
