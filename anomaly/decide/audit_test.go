package decide

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
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

// runEngine starts an engine and a Trail recording through rec on a fresh
// NATS; they run until the end of t. stop ends both Runs and waits for them.
func runEngine(t *testing.T, rec Recorder, mod func(*Config)) (eng *Engine, pub *limiter.Publisher, reg *prometheus.Registry, stop func()) {
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
	pub, err = limiter.NewPublisher(context.Background(), nc, limiter.WithSigner(testSigner(t)))
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	if mod != nil {
		mod(&cfg)
	}
	reg = prometheus.NewPedanticRegistry()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	eng, err = New(cfg, Deps{Publisher: pub, Registerer: reg, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrail(cfg, TrailDeps{Conn: nc, Recorder: rec, Verifier: pub.Verifier(), Registerer: reg, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- eng.Run(ctx) }()
	go func() { done <- tr.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			for range 2 {
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			}
		})
	}
	t.Cleanup(stop)
	return eng, pub, reg, stop
}

// fireAndWait sends a firing usage alert for tenant and fails unless its
// throttle is in the KV bucket within limit.
func fireAndWait(t *testing.T, eng *Engine, pub *limiter.Publisher, tenant string, limit time.Duration) {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	eng.Send(ctx, alert(tenant, anomaly.MetricUsage, anomaly.StatusFiring, 600))
	for {
		if d, err := pub.Get(ctx, tenant, limiter.ScopeAll); err == nil && d.Action == limiter.ActionThrottle {
			return
		}
		if took := time.Since(start); took > limit {
			t.Fatalf("throttle of %s not in KV %v after its alert, want within %v", tenant, took, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDecisionsFlowWhileClickHouseIsDown: with the audit table's
// ClickHouse stopped, new alerts still become throttles in the KV bucket at
// once; their audit rows arrive once ClickHouse is back, every one of
// them, even when more revisions came than the trail's queue holds (it
// pauses its watch instead of dropping).
func TestDecisionsFlowWhileClickHouseIsDown(t *testing.T) {
	for _, tc := range []struct {
		name   string
		queue  int
		alerts int
	}{
		{"queue holds all", 64, 5},
		{"queue overflows", 2, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := testenv.NewClickHouseServer(t)
			db := ch.NewDatabase(t)
			st := teststore.On(t, ch, db)
			rec := NewClickHouseRecorder(st)
			eng, pub, reg, _ := runEngine(t, rec, func(c *Config) {
				c.AuditQueueSize, c.AuditTimeout = tc.queue, 2*time.Second
			})
			rows := func() int {
				var n uint64
				if err := st.Conn().QueryRow(context.Background(), "SELECT count() FROM "+db+".decisions").Scan(&n); err != nil {
					t.Fatal(err)
				}
				return int(n)
			}
			fireAndWait(t, eng, pub, "before", time.Second)
			testenv.Eventually(t, 5*time.Second, "the first decision's audit row", func() bool { return rows() == 1 })

			ch.Stop()
			for i := range tc.alerts {
				fireAndWait(t, eng, pub, fmt.Sprintf("down-%d", i), time.Second)
			}
			if err := ch.Start(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(30 * time.Second)
			var got int
			for {
				got = rows() - 1
				if got == tc.alerts && gauge(t, reg, "tenantguard_decisions_audit_pending") == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after ClickHouse came back: %d audit rows, want %d decisions", got, tc.alerts)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if d := counter(t, reg, "tenantguard_decisions_audit_dropped_total"); d != 0 {
				t.Fatalf("tenantguard_decisions_audit_dropped_total = %v, want 0", d)
			}
			if f := counter(t, reg, "tenantguard_decisions_audit_errors_total"); f < 1 {
				t.Fatalf("tenantguard_decisions_audit_errors_total = %v, want the failed inserts counted", f)
			}
			var dup int64
			if err := st.Conn().QueryRow(context.Background(),
				"SELECT count() - uniqExact(kv_revision) FROM "+db+".decisions").Scan(&dup); err != nil || dup != 0 {
				t.Fatalf("%d revisions recorded twice (%v)", dup, err)
			}
			t.Logf("%d audit rows written after the restart", got)
		})
	}
}

// TestDecisionsFlowWhileClickHouseHangs: a ClickHouse that accepts
// connections and never answers (a hung server, a black-holed network)
// costs each query its whole timeout. Decisions must still reach the KV
// bucket at once, and both Runs must return promptly: the trail, which
// cannot learn where to resume, queues nothing and records the revisions
// from the bucket at its next start.
func TestDecisionsFlowWhileClickHouseHangs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	scfg := store.DefaultConfig()
	scfg.Addr, scfg.DialTimeout = []string{ln.Addr().String()}, 3*time.Second
	st, err := store.Open(context.Background(), scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rec := NewClickHouseRecorder(st)
	eng, pub, reg, stop := runEngine(t, rec, func(c *Config) { c.AuditTimeout = time.Second })
	for i := range 5 {
		fireAndWait(t, eng, pub, fmt.Sprintf("hung-%d", i), time.Second)
	}
	if p := gauge(t, reg, "tenantguard_decisions_audit_pending"); p != 0 {
		t.Fatalf("tenantguard_decisions_audit_pending = %v before the resume point is known, want 0", p)
	}
	begin := time.Now()
	stop()
	if took := time.Since(begin); took > 3*time.Second {
		t.Fatalf("Run took %v to return, want at most the 1 s audit timeout and 1 s", took)
	}
}

func TestAuditConfigValidate(t *testing.T) {
	c := DefaultConfig()
	if c.KVTimeout != 2*time.Second || c.AuditQueueSize != 4096 || c.AuditTimeout != 5*time.Second {
		t.Fatalf("defaults: got %v, %d, %v, want 2s, 4096, 5s", c.KVTimeout, c.AuditQueueSize, c.AuditTimeout)
	}
	c.KVTimeout, c.AuditQueueSize, c.AuditTimeout = 0, 0, 0
	err := c.Validate()
	for _, want := range []string{"decisions.kv_timeout: must be > 0", "decisions.audit_queue_size: must be > 0",
		"decisions.audit_timeout: must be > 0"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want it to name %s", err, want)
		}
	}
}

// TestKVOutageCostsOneTimeoutPerRound: with NATS gone, a new alert costs
// one kv_timeout and a renewal round of several decisions costs one too,
// not one each (nor the client's 5 s default).
func TestKVOutageCostsOneTimeoutPerRound(t *testing.T) {
	ns := testenv.NATS(t)
	nc := testenv.Connect(t, ns.URL, nats.MaxReconnects(-1))
	ctx := context.Background()
	if js, err := jetstream.New(nc); err != nil {
		t.Fatal(err)
	} else if _, err := limiter.EnsureBuckets(ctx, js, 1, 0); err != nil { // as the daemon does
		t.Fatal(err)
	}
	pub, err := limiter.NewPublisher(ctx, nc, limiter.WithSigner(testSigner(t)))
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.KVTimeout, cfg.TTL, cfg.RenewEvery = 300*time.Millisecond, 10*time.Second, time.Second
	now := time.Now()
	var clock sync.Mutex
	eng, err := New(cfg, Deps{Publisher: pub, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: func() time.Time { clock.Lock(); defer clock.Unlock(); return now }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if err := eng.Handle(ctx, alert(fmt.Sprintf("t%d", i), anomaly.MetricUsage, anomaly.StatusFiring, 600)); err != nil {
			t.Fatal(err)
		}
	}
	ns.Shutdown()
	clock.Lock()
	now = now.Add(2 * cfg.RenewEvery) // all 4 due
	clock.Unlock()
	begin := time.Now()
	eng.Renew(ctx)
	if took := time.Since(begin); took > 3*cfg.KVTimeout {
		t.Fatalf("a renewal round of 4 decisions with NATS down took %v, want about one kv_timeout (%v)", took, cfg.KVTimeout)
	}
	begin = time.Now()
	err = eng.Handle(ctx, alert("new", anomaly.MetricUsage, anomaly.StatusFiring, 600))
	if took := time.Since(begin); took > 3*cfg.KVTimeout || !errors.Is(err, errKVTimeout) {
		t.Fatalf("a new alert with NATS down: %v after %v, want errKVTimeout after about %v", err, took, cfg.KVTimeout)
	}
	if n := len(eng.Active()); n != 4 {
		t.Fatalf("%d published decisions held, want the 4 from before the outage", n)
	}
}
