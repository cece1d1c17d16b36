package notify

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

// gate is a pure-logic test Notifier: it records what it is given and
// blocks each call until the gate is opened (or its ctx ends).
type gate struct {
	name    string
	open    chan struct{}
	mu      sync.Mutex
	got     []string // tenants, in delivery order
	entered chan struct{}
}

func newGate(name string) *gate {
	return &gate{name: name, open: make(chan struct{}), entered: make(chan struct{}, 1)}
}

func (g *gate) Name() string { return g.name }

func (g *gate) Notify(ctx context.Context, alerts []anomaly.Alert) (Result, error) {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	select {
	case <-g.open:
	case <-ctx.Done():
		return Result{Failed: len(alerts)}, ctx.Err()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, a := range alerts {
		g.got = append(g.got, a.TenantID)
	}
	return Result{Sent: len(alerts)}, nil
}

func (g *gate) delivered() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.got...)
}

func newTestFanout(t *testing.T, cfg Config, ns ...Notifier) (*Fanout, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	f, err := New(cfg, Deps{Registerer: reg, Logger: quietLogger(), Notifiers: ns})
	if err != nil {
		t.Fatal(err)
	}
	return f, reg
}

func TestSendNeverBlocksAndDropsPerPolicy(t *testing.T) {
	for _, tc := range []struct {
		overflow  string
		wantFirst string // the first tenant delivered after the in-flight one
	}{
		{DropOldest, "t9996"}, // the queue keeps the newest 4
		{DropNew, "t1"},       // the queue keeps the oldest 4
	} {
		t.Run(tc.overflow, func(t *testing.T) {
			cfg := testConfig()
			cfg.QueueSize = 4
			cfg.Overflow = tc.overflow
			slow := newGate("slow")
			fast := newGate("fast")
			close(fast.open)
			f, reg := newTestFanout(t, cfg, slow, fast)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- f.Run(ctx) }()
			defer func() { cancel(); <-done }()

			f.Send(ctx, testAlert("t0"))
			<-slow.entered // t0 is in flight; the slow sink is stuck
			const n = 10000
			begin := time.Now()
			for i := 1; i < n; i++ {
				f.Send(ctx, testAlert("t"+itoa(i)))
			}
			if d := time.Since(begin); d > time.Second {
				t.Errorf("%d Sends with a stuck sink took %s", n, d)
			}
			if got := testenv.MetricValue(t, reg, "tenantguard_notifier_queue_length", "sink", "slow"); got != 4 {
				t.Errorf("queue_length{slow}: got %v, want 4", got)
			}
			if got := testenv.MetricValue(t, reg, "tenantguard_notifier_dropped_total", "sink", "slow"); got != n-1-4 {
				t.Errorf("dropped_total{slow}: got %v, want %d", got, n-1-4)
			}
			// The fast sink is not held back by the slow one.
			testenv.Eventually(t, 5*time.Second, "fast sink starved by the slow one", func() bool {
				return testenv.MetricValue(t, reg, "tenantguard_notifier_sent_total", "sink", "fast")+
					testenv.MetricValue(t, reg, "tenantguard_notifier_dropped_total", "sink", "fast") == n
			})
			close(slow.open)
			testenv.Eventually(t, 5*time.Second, "slow sink did not deliver its queue", func() bool {
				return len(slow.delivered()) == 5
			})
			got := slow.delivered()
			if got[0] != "t0" || got[1] != tc.wantFirst {
				t.Errorf("delivered: got %v, want t0 then %s...", got, tc.wantFirst)
			}
		})
	}
}

func TestCloseDrainsQueue(t *testing.T) {
	g := newGate("g")
	close(g.open)
	f, reg := newTestFanout(t, testConfig(), g)
	done := make(chan error, 1)
	go func() { done <- f.Run(context.Background()) }()
	for i := range 50 {
		f.Send(context.Background(), testAlert("t"+itoa(i)))
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := len(g.delivered()); got != 50 {
		t.Errorf("delivered after Close: got %d, want 50", got)
	}
	f.Send(context.Background(), testAlert("late"))
	if got := testenv.MetricValue(t, reg, "tenantguard_notifier_dropped_total", "sink", "g"); got != 1 {
		t.Errorf("dropped_total after Close: got %v, want 1 (the late alert)", got)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestDrainDeadline(t *testing.T) {
	g := newGate("stuck") // never opened
	cfg := testConfig()
	cfg.DrainTimeout = 200 * time.Millisecond
	f, reg := newTestFanout(t, cfg, g)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	f.Send(ctx, testAlert("t0"))
	<-g.entered // t0 is in flight and never finishes
	for i := 1; i < 10; i++ {
		f.Send(ctx, testAlert("t"+itoa(i)))
	}
	begin := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the drain deadline")
	}
	if d := time.Since(begin); d < cfg.DrainTimeout || d > 2*time.Second {
		t.Errorf("shutdown took %s, want about the drain timeout %s", d, cfg.DrainTimeout)
	}
	failed := testenv.MetricValue(t, reg, "tenantguard_notifier_failures_total", "sink", "stuck")
	dropped := testenv.MetricValue(t, reg, "tenantguard_notifier_dropped_total", "sink", "stuck")
	if failed != 1 || dropped != 9 {
		t.Errorf("after the deadline: failed %v, dropped %v; want 1 (in flight) and 9 (queued)", failed, dropped)
	}
	f.Close()
}

func TestSendRefusesInvalidAlerts(t *testing.T) {
	g := newGate("g")
	close(g.open)
	f, reg := newTestFanout(t, testConfig(), g)
	ok := testAlert("acme")
	for _, bad := range []func(*anomaly.Alert){
		func(a *anomaly.Alert) { a.TenantID = "" },
		func(a *anomaly.Alert) { a.Fingerprint = "" },
		func(a *anomaly.Alert) { a.Metric = "" },
		func(a *anomaly.Alert) { a.StartsAt = time.Time{} },
		func(a *anomaly.Alert) { a.Status = "maybe" },
	} {
		a := ok
		bad(&a)
		f.Send(context.Background(), a)
	}
	if got := testenv.MetricValue(t, reg, "tenantguard_notifier_invalid_total"); got != 5 {
		t.Errorf("invalid_total: got %v, want 5", got)
	}
	if got := testenv.MetricValue(t, reg, "tenantguard_notifier_queue_length", "sink", "g"); got != 0 {
		t.Errorf("queue_length: got %v, want 0", got)
	}
	f.Close()
}

func TestNewRequiresClients(t *testing.T) {
	cfg := DefaultConfig() // nats and clickhouse on by default
	_, err := New(cfg, Deps{Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), "alerts.nats.enabled") {
		t.Errorf("nats on without a connection: got %v, want an alerts.nats.enabled error", err)
	}
	cfg.NATS.Enabled = false
	_, err = New(cfg, Deps{Logger: quietLogger()})
	if err == nil || !strings.Contains(err.Error(), "alerts.clickhouse.enabled") {
		t.Errorf("clickhouse on without a connection: got %v, want an alerts.clickhouse.enabled error", err)
	}
	reg := prometheus.NewRegistry()
	if _, err := New(testConfig(), Deps{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(testConfig(), Deps{Registerer: reg}); err == nil {
		t.Error("two notifiers on one registry: got nil, want a registration error")
	}
}

func TestFiniteValues(t *testing.T) {
	g := newGate("g")
	close(g.open)
	var got []anomaly.Alert
	var mu sync.Mutex
	rec := notifierFunc{"rec", func(a []anomaly.Alert) { mu.Lock(); got = append(got, a...); mu.Unlock() }}
	f, _ := newTestFanout(t, testConfig(), rec)
	done := make(chan error, 1)
	go func() { done <- f.Run(context.Background()) }()
	a := testAlert("acme")
	a.Baseline, a.Ratio = 0, posInf()
	a.Labels = map[string]string{"k": "v"}
	f.Send(context.Background(), a)
	a.Labels["k"] = "changed by the caller"
	f.Close()
	<-done
	if len(got) != 1 || got[0].Ratio != maxFloat || got[0].Labels["k"] != "v" {
		t.Errorf("got %+v, want ratio clamped to MaxFloat64 and labels copied", got)
	}
}

type notifierFunc struct {
	name string
	f    func([]anomaly.Alert)
}

func (n notifierFunc) Name() string { return n.name }
func (n notifierFunc) Notify(_ context.Context, a []anomaly.Alert) (Result, error) {
	n.f(a)
	return Result{Sent: len(a)}, nil
}
