package meter_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/collector"
	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/meter"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

// fullEmitter returns an emitter whose buffer of size is full and stays
// full: NATS goes away after it is created, so nothing is confirmed.
func fullEmitter(t testing.TB, policy string, size int) *emit.Emitter {
	t.Helper()
	srv := testenv.NATS(t)
	nc := connect(t, srv.URL)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := collector.EnsureStreams(context.Background(), js, collector.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	cfg := emit.DefaultConfig()
	cfg.BufferSize, cfg.Overflow = size, policy
	em, err := emit.New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		_ = em.Close(ctx) // reports the unconfirmed events; expected here
	})
	return em
}

// TestFullEmitterNeverDelaysRequests: with the emitter's buffer full,
// under either overflow policy, requests take no longer than without the
// middleware's metering, and every record is accounted for: handed to the
// emitter or dropped and counted.
func TestFullEmitterNeverDelaysRequests(t *testing.T) {
	for _, policy := range []string{emit.Drop, emit.Block} {
		t.Run(policy, func(t *testing.T) {
			em := fullEmitter(t, policy, 16)
			reg := prometheus.NewPedanticRegistry()
			if err := em.Register(reg); err != nil {
				t.Fatal(err)
			}
			cfg := testConfig()
			cfg.QueueSize, cfg.FlushInterval = 64, time.Millisecond
			m, err := meter.New(cfg, meter.Deps{Emitter: em, Registerer: reg, Logger: quietLog()})
			if err != nil {
				t.Fatal(err)
			}
			bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
			h := m.Handler(bare)
			const n = 5000
			bareD, metD := make([]time.Duration, n), make([]time.Duration, n)
			for i := range n {
				req := httptest.NewRequest("GET", "/v1/invoices", nil)
				req.Header.Set("X-Tenant-ID", "acme")
				t0 := time.Now()
				bare.ServeHTTP(httptest.NewRecorder(), req)
				t1 := time.Now()
				h.ServeHTTP(httptest.NewRecorder(), req)
				bareD[i], metD[i] = t1.Sub(t0), time.Since(t1)
			}
			slices.Sort(bareD)
			slices.Sort(metD)
			if worst := metD[n-1]; worst > 50*time.Millisecond {
				t.Errorf("slowest metered request took %s with the emitter full, want no waiting", worst)
			}
			if added := metD[n/2] - bareD[n/2]; added > 50*time.Microsecond {
				t.Errorf("median request took %s longer than bare (%s), want no waiting", added, bareD[n/2])
			}
			t.Logf("median bare %s, metered %s; p99 metered %s", bareD[n/2], metD[n/2], metD[n*99/100])

			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_ = m.Close(ctx) // under block, the last hand-over waits out ctx
			st := em.Stats()
			if got := m.Emitted() + m.Dropped(); got != n {
				t.Fatalf("emitted %d + dropped %d = %d records, want %d", m.Emitted(), m.Dropped(), got, n)
			}
			if st.Accepted != 16 || m.Emitted() != st.Accepted {
				t.Fatalf("emitter accepted %d, meter handed over %d; want the buffer size 16 for both", st.Accepted, m.Emitted())
			}
			got := testenv.MetricSums(t, reg)
			if got["tenantguard_meter_dropped_total"] != float64(m.Dropped()) || m.Dropped() < n-100 {
				t.Fatalf("tenantguard_meter_dropped_total %v, Dropped() %d; want them equal and near %d",
					got["tenantguard_meter_dropped_total"], m.Dropped(), n)
			}
			if policy == emit.Drop && got["tenantguard_emitter_dropped_total"] == 0 {
				t.Fatal("tenantguard_emitter_dropped_total is 0: the emitter's drops are not counted")
			}
		})
	}
}
