package limiter

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectJitter(0, 0), nats.Timeout(time.Second))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// testSigner is the decision key the tests' publishers sign with and their
// limiters trust; seed picks another key.
func testSigner(t testing.TB, seed byte) *Signer {
	t.Helper()
	s, err := NewSigner(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newPublisher(t testing.TB, url string) *Publisher {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc := connect(t, url)
	ensureBuckets(t, nc)
	p, err := NewPublisher(ctx, nc, WithSigner(testSigner(t, 1)))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// ensureBuckets creates the decisions and presence buckets as the daemon
// does.
func ensureBuckets(t testing.TB, nc *nats.Conn) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := EnsureBuckets(ctx, js, 1, 0); err != nil {
		t.Fatal(err)
	}
}

type instance struct {
	*Limiter
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan struct{}
}

// start runs a limiter on its own connection and waits until it has loaded
// the decisions bucket.
func start(t testing.TB, url string, mod func(*Config)) *instance {
	t.Helper()
	return startWith(t, url, mod, nil)
}

// startWith is start with the SDK metrics registered in reg (nil: none).
func startWith(t testing.TB, url string, mod func(*Config), reg prometheus.Registerer) *instance {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Group = "test"
	cfg.TrustedKeys = []string{FormatPublicKey(testSigner(t, 1).PublicKey())}
	if mod != nil {
		mod(&cfg)
	}
	nc := connect(t, url)
	l, err := New(cfg, Deps{Conn: nc, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	var once sync.Once
	l.onApply = func([]string) { once.Do(func() { close(ready) }) }
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{Limiter: l, nc: nc, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(in.done)
		if err := l.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(in.stop)
	// An empty bucket applies nothing; give the watch a moment then.
	select {
	case <-ready:
	case <-time.After(300 * time.Millisecond):
	}
	return in
}

func (in *instance) stop() {
	in.cancel()
	<-in.done
	in.Close()
}

// crash stops the instance without deleting its presence key.
func (in *instance) crash() {
	in.nc.Close()
	in.stop()
}

func TestDecisionReaches50Instances(t *testing.T) {
	srv := testenv.NATS(t)
	pub := newPublisher(t, srv.URL)
	var ins []*instance
	for range 50 {
		ins = append(ins, start(t, srv.URL, nil))
	}
	testenv.Eventually(t, 10*time.Second, "50 instances see each other", func() bool {
		for _, in := range ins {
			if in.Instances() != 50 {
				return false
			}
		}
		return true
	})
	ctx := context.Background()
	if _, err := pub.Put(ctx, throttle("noisy", 500, 100, SourceAnomaly, time.Minute)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "all 50 apply the throttle", func() bool {
		for _, in := range ins {
			if r, b, ok := in.Limit("noisy"); !ok || r != 10 || b != 2 {
				return false
			}
		}
		return true
	})
	now := time.Now()
	total := 0
	for _, in := range ins {
		for range 10 {
			if in.AllowN("noisy", now, 1) {
				total++
			}
		}
		if !in.Allow("quiet") {
			t.Fatal("a tenant without a decision was throttled")
		}
	}
	if total != 100 {
		t.Fatalf("cluster-wide burst: got %d allowed at one instant, want 100", total)
	}
}

func TestExpiryAndRelease(t *testing.T) {
	srv := testenv.NATS(t)
	pub := newPublisher(t, srv.URL)
	in := start(t, srv.URL, nil)
	ctx := context.Background()
	if _, err := pub.Put(ctx, throttle("short", 1, 1, SourceManual, 700*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Put(ctx, throttle("long", 1, 1, SourceManual, time.Hour)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Second, "both applied", func() bool {
		_, _, a := in.Limit("short")
		_, _, b := in.Limit("long")
		return a && b
	})
	testenv.Eventually(t, 2*time.Second, "short expires locally", func() bool { _, _, ok := in.Limit("short"); return !ok })
	if _, _, ok := in.Limit("long"); !ok {
		t.Fatal("long decision gone too early")
	}
	live, err := pub.List(ctx, false)
	if err != nil || len(live) != 1 || live[0].TenantID != "long" {
		t.Fatalf("List live = %+v, %v; want only long", live, err)
	}
	if n, err := pub.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1", n, err)
	}
	if err := pub.Clear(ctx, "long", ScopeAll, SourceManual); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Second, "release applied", func() bool { _, _, ok := in.Limit("long"); return !ok })
}

func TestManualOutranksAutomatic(t *testing.T) {
	srv := testenv.NATS(t)
	pub := newPublisher(t, srv.URL)
	in := start(t, srv.URL, nil)
	ctx := context.Background()
	if _, err := pub.Put(ctx, throttle("acme", 100, 100, SourceAnomaly, time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Put(ctx, throttle("acme", 5, 5, SourceManual, 800*time.Millisecond)); err != nil {
		t.Fatalf("manual over automatic: %v", err)
	}
	if _, err := pub.Put(ctx, throttle("acme", 100, 100, SourceAnomaly, time.Hour)); !errors.Is(err, ErrManualOverride) {
		t.Fatalf("automatic over live manual: got %v, want ErrManualOverride", err)
	}
	if err := pub.Clear(ctx, "acme", ScopeAll, SourceSpendCap); !errors.Is(err, ErrManualOverride) {
		t.Fatalf("automatic clear of live manual: got %v, want ErrManualOverride", err)
	}
	testenv.Eventually(t, 2*time.Second, "manual applied", func() bool { r, _, ok := in.Limit("acme"); return ok && r == 5 })
	time.Sleep(900 * time.Millisecond)
	if _, err := pub.Put(ctx, throttle("acme", 100, 100, SourceAnomaly, time.Hour)); err != nil {
		t.Fatalf("automatic after the manual expired: %v", err)
	}
	testenv.Eventually(t, 2*time.Second, "automatic applied", func() bool { r, _, ok := in.Limit("acme"); return ok && r == 100 })
	if err := pub.Clear(ctx, "acme", ScopeAll, SourceAnomaly); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Second, "cleared", func() bool { _, _, ok := in.Limit("acme"); return !ok })
	// Clearing an absent key is a no-op, not an error.
	if err := pub.Clear(ctx, "acme", ScopeAll, SourceAnomaly); err != nil {
		t.Fatal(err)
	}
}

func TestGlobalSplitJoinLeave(t *testing.T) {
	srv := testenv.NATS(t)
	pub := newPublisher(t, srv.URL)
	ctx := context.Background()
	const global, gburst = 300.0, 30
	if _, err := pub.Put(ctx, throttle("acme", global, gburst, SourceManual, time.Hour)); err != nil {
		t.Fatal(err)
	}
	var live []*instance
	check := func(stage string, n int, start time.Time) time.Duration {
		t.Helper()
		testenv.Eventually(t, 2*time.Second, fmt.Sprintf("%s: %d instances converge", stage, n), func() bool {
			for _, in := range live {
				if r, b, ok := in.Limit("acme"); !ok || r != rate.Limit(global/float64(n)) || b != gburst/n {
					return false
				}
			}
			return true
		})
		took := time.Since(start)
		var sumRate float64
		sumBurst := 0
		now := time.Now().Add(10 * time.Second) // a full bucket everywhere, decision still live
		for _, in := range live {
			r, _, _ := in.Limit("acme")
			sumRate += float64(r)
			for i := 0; in.AllowN("acme", now, 1); i++ {
				sumBurst++
				if i > 1000 {
					r, b, _ := in.Limit("acme")
					t.Fatalf("%s: bucket never empties: limit %v burst %d instances %d", stage, r, b, in.Instances())
				}
			}
		}
		if sumRate < global*0.99 || sumRate > global*1.01 {
			t.Errorf("%s: cluster rate %.1f, want %.0f", stage, sumRate, global)
		}
		if sumBurst > gburst*11/10 {
			t.Errorf("%s: cluster burst %d exceeds 1.1 x %d", stage, sumBurst, gburst)
		}
		t.Logf("%s: %d instances, converged in %s, cluster rate %.1f/s, burst %d", stage, n, took, sumRate, sumBurst)
		return took
	}
	for range 3 {
		live = append(live, start(t, srv.URL, nil))
	}
	check("start", 3, time.Now())
	var took [3]time.Duration
	t0 := time.Now()
	for range 2 {
		live = append(live, start(t, srv.URL, nil))
	}
	for i := 0; i < 20 && live[0].Instances() != 5; i++ {
		t.Logf("join +%s: instances %d %d %d %d %d", time.Since(t0), live[0].Instances(), live[1].Instances(), live[2].Instances(), live[3].Instances(), live[4].Instances())
		time.Sleep(100 * time.Millisecond)
	}
	took[0] = check("join", 5, t0)
	t0 = time.Now()
	live[3].stop()
	live[4].stop()
	live = live[:3]
	took[1] = check("graceful leave", 3, t0)
	t0 = time.Now()
	live[2].crash()
	live = live[:2]
	took[2] = check("crash", 2, t0)
	for i, d := range took {
		if d > 2*time.Second {
			t.Errorf("re-convergence %d took %s, want <= 2s", i, d)
		}
	}
}

// proxy forwards TCP to target and can cut every connection, to partition
// limiters from NATS while the publisher still reaches it.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	down   bool
}

func newProxy(t testing.TB, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *proxy) cut(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

func TestNATSOutage(t *testing.T) {
	srv := testenv.NATS(t)
	px := newProxy(t, srv.URL[len("nats://"):])
	pub := newPublisher(t, srv.URL)
	ctx := context.Background()
	var ins []*instance
	for range 3 {
		ins = append(ins, start(t, px.url(), nil))
	}
	testenv.Eventually(t, 3*time.Second, "3 instances", func() bool { return ins[0].Instances() == 3 })
	if _, err := pub.Put(ctx, throttle("before", 30, 3, SourceManual, time.Hour)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 2*time.Second, "decision applied", func() bool { _, b, ok := ins[2].Limit("before"); return ok && b == 1 })
	baseline := hotPathNs(ins[0].Limiter)

	// 1. Partition the limiters: the publisher keeps writing.
	px.cut(true)
	testenv.Eventually(t, 2*time.Second, "limiters disconnected", func() bool { return !ins[0].nc.IsConnected() })
	if _, err := pub.Put(ctx, throttle("during", 30, 3, SourceManual, time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := pub.Clear(ctx, "before", ScopeAll, SourceManual); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // longer than the presence TTL
	outage := hotPathNs(ins[0].Limiter)
	for _, in := range ins {
		if _, b, ok := in.Limit("before"); !ok || b != 1 {
			t.Fatalf("during the outage the last known decision must stay, split by 3: ok=%v burst=%d", ok, b)
		}
		if in.Instances() != 3 {
			t.Fatalf("during the outage the instance count changed to %d; want it frozen at 3", in.Instances())
		}
	}
	t.Logf("hot path (throttled tenant): %.0f ns/op connected, %.0f ns/op during outage", baseline, outage)
	if outage > 3*baseline+200 {
		t.Errorf("hot path during outage %.0f ns/op vs %.0f before", outage, baseline)
	}
	px.cut(false)
	testenv.Eventually(t, 5*time.Second, "outage decisions arrive after reconnect", func() bool {
		for _, in := range ins {
			_, _, before := in.Limit("before")
			_, _, during := in.Limit("during")
			if before || !during {
				return false
			}
		}
		return true
	})

	// 2. Kill and restart the server itself (nats.go #1777: the old watcher
	// would never deliver again).
	srv.Shutdown()
	time.Sleep(300 * time.Millisecond)
	if !ins[1].Allow("quiet") {
		t.Fatal("hot path broken while NATS is down")
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "publisher reconnects", func() bool {
		_, err := pub.Put(ctx, throttle("after", 30, 3, SourceManual, time.Hour))
		return err == nil
	})
	testenv.Eventually(t, 5*time.Second, "decision after restart arrives everywhere", func() bool {
		for _, in := range ins {
			if _, _, ok := in.Limit("after"); !ok {
				return false
			}
		}
		return true
	})
}

// hotPathNs times Allow for a throttled tenant (median of 5 runs).
func hotPathNs(l *Limiter) float64 {
	const n = 200000
	var runs []float64
	for range 5 {
		start := time.Now()
		for range n {
			l.Allow("before")
		}
		runs = append(runs, float64(time.Since(start).Nanoseconds())/n)
	}
	return median(runs)
}
