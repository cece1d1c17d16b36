package emit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/internal/testenv"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricsReportBufferAndDrops: with NATS down, a drop-policy emitter's
// buffer fills; its metrics show the depth, the drops and the invalid
// events, and after NATS is back the publishes.
func TestMetricsReportBufferAndDrops(t *testing.T) {
	srv, nc, _ := setup(t)
	srv.Shutdown()
	cfg := DefaultConfig()
	cfg.BufferSize, cfg.Overflow, cfg.RetryWait, cfg.AckTimeout = 20, Drop, 20*time.Millisecond, time.Second
	e, err := New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := e.Register(reg); err != nil {
		t.Fatal(err)
	}
	for i := range 26 {
		if err := e.Emit(context.Background(), ev(i)); err != nil && !errors.Is(err, ErrBufferFull) {
			t.Fatal(err)
		}
	}
	bad := ev(99)
	bad.TenantID = "a.b"
	_ = e.Emit(context.Background(), bad)
	want := map[string]float64{
		"tenantguard_emitter_buffered":       20,
		"tenantguard_emitter_buffer_size":    20,
		"tenantguard_emitter_accepted_total": 20,
		"tenantguard_emitter_dropped_total":  6,
		"tenantguard_emitter_invalid_total":  1,
		"tenantguard_emitter_fast_batch":     0, // the stream has no allow_batched, and NATS is down
	}
	got := testenv.MetricSums(t, reg)
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s = %v, want %v", name, got[name], w)
		}
	}
	if got["tenantguard_emitter_retries_total"] < 1 {
		// The sender keeps trying while NATS is down.
		deadline := time.Now().Add(5 * time.Second)
		for testenv.MetricSums(t, reg)["tenantguard_emitter_retries_total"] < 1 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := testenv.MetricSums(t, reg)["tenantguard_emitter_retries_total"]; n < 1 {
			t.Errorf("retries_total = %v with NATS down, want > 0", n)
		}
	}
	srv.Restart(t)
	if err := e.Close(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	got = testenv.MetricSums(t, reg)
	if got["tenantguard_emitter_published_total"] != 20 || got["tenantguard_emitter_buffered"] != 0 {
		t.Errorf("after NATS is back: published %v, buffered %v; want 20 and 0",
			got["tenantguard_emitter_published_total"], got["tenantguard_emitter_buffered"])
	}
}
