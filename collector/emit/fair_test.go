package emit

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// queueEvents admits and queues n events of tenant into q.
func queueEvents(t *testing.T, q *fairQueue, tenant string, n int) {
	t.Helper()
	for range n {
		tq, err := q.admit(context.Background(), tenant, false, nil)
		if err != nil {
			t.Fatalf("admit %s: %v", tenant, err)
		}
		q.push(&pending{msg: &nats.Msg{Subject: tenant}, tenant: tq}, false)
	}
}

// popOrder pops up to n events and returns their tenants, joined.
func popOrder(q *fairQueue, now time.Time, n int) string {
	var got []string
	for range n {
		p, _ := q.pop(now)
		if p == nil {
			break
		}
		got = append(got, p.msg.Subject)
	}
	return strings.Join(got, ",")
}

// TestFairQueueTakesTenantsInTurn: a tenant with a deep queue gets one
// event per turn, so tenants that arrive after its burst are not behind it.
func TestFairQueueTakesTenantsInTurn(t *testing.T) {
	tests := []struct {
		name   string
		queued [][2]any // tenant, count, in arrival order
		want   string
	}{
		{"one tenant keeps its order", [][2]any{{"a", 3}}, "a,a,a"},
		{"a burst then two others", [][2]any{{"a", 5}, {"b", 2}, {"c", 1}}, "a,b,c,a,b,a,a,a"},
		{"others first, then the burst", [][2]any{{"b", 1}, {"a", 4}, {"c", 1}}, "b,a,c,a,a,a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newFairQueue(0, 0, 0)
			for _, qd := range tt.queued {
				queueEvents(t, q, qd[0].(string), qd[1].(int))
			}
			if got := popOrder(q, time.Now(), 100); got != tt.want {
				t.Errorf("got order %s, want %s", got, tt.want)
			}
		})
	}
}

// TestFairQueueTenantRate: past its burst a tenant waits for tokens while
// the others go on; pop says when its next token is due.
func TestFairQueueTenantRate(t *testing.T) {
	q := newFairQueue(10, 2, 0) // 10 events/s, burst 2
	queueEvents(t, q, "flood", 5)
	queueEvents(t, q, "b", 2)
	now := time.Now().Add(time.Millisecond)
	if got, want := popOrder(q, now, 100), "flood,b,flood,b"; got != want {
		t.Fatalf("got order %s, want %s", got, want)
	}
	p, due := q.pop(now)
	if p != nil {
		t.Fatalf("got event of %s past the burst, want none", p.msg.Subject)
	}
	if wait := due.Sub(now); wait < 90*time.Millisecond || wait > 110*time.Millisecond {
		t.Errorf("got next token due in %v, want about 100ms at 10 events/s", wait)
	}
	if got, want := popOrder(q, now.Add(250*time.Millisecond), 100), "flood,flood"; got != want {
		t.Errorf("after 250ms: got %s, want %s (2.5 tokens)", got, want)
	}
	if d, _ := q.counters(); d == 0 {
		t.Errorf("got 0 deferrals, want > 0")
	}
	// An event sent again after a failure was charged already.
	p, _ = q.pop(now.Add(time.Second))
	q.push(p, true)
	if p2, _ := q.pop(now.Add(time.Second)); p2 != p {
		t.Errorf("the event sent again did not come back first")
	}
}

// TestFairQueueShare: a tenant at its share is refused under drop, waits
// under block until one of its events is released, and other tenants are
// admitted meanwhile.
func TestFairQueueShare(t *testing.T) {
	q := newFairQueue(0, 0, 2)
	queueEvents(t, q, "flood", 2)
	if _, err := q.admit(context.Background(), "flood", false, nil); !errors.Is(err, ErrTenantBufferFull) || !errors.Is(err, ErrBufferFull) {
		t.Fatalf("drop past the share: got %v, want ErrTenantBufferFull wrapping ErrBufferFull", err)
	}
	queueEvents(t, q, "other", 2) // others are not held up
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := q.admit(ctx, "flood", true, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("block past the share: got %v, want the context's deadline", err)
	}
	admitted := make(chan error, 1)
	go func() {
		_, err := q.admit(context.Background(), "flood", true, nil)
		admitted <- err
	}()
	select {
	case err := <-admitted:
		t.Fatalf("admitted past the share before a release: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	p, _ := q.pop(time.Now())
	q.release(p.tenant)
	select {
	case err := <-admitted:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Second):
		t.Fatal("still waiting after a release")
	}
	if _, w := q.counters(); w != 3 {
		t.Errorf("got %d full-share waits, want 3", w)
	}
}

// TestFairQueueForgetsIdleTenants: a tenant holding nothing is forgotten,
// with a rate only once its bucket has refilled.
func TestFairQueueForgetsIdleTenants(t *testing.T) {
	q := newFairQueue(1000, 1, 0)
	queueEvents(t, q, "a", 1)
	p, _ := q.pop(time.Now())
	q.release(p.tenant)
	if _, ok := q.tenants["a"]; !ok {
		t.Fatal("forgotten with an empty bucket; want kept until it refills")
	}
	q.sweep(time.Now().Add(time.Second))
	if n := len(q.tenants); n != 0 {
		t.Errorf("got %d tenants after the sweep, want 0", n)
	}
	top, rest := q.top(10)
	if len(top) != 0 || rest != 0 {
		t.Errorf("got top %v rest %d, want none", top, rest)
	}
}

// TestFairQueueTop: the tenants holding most, and the rest summed.
func TestFairQueueTop(t *testing.T) {
	q := newFairQueue(0, 0, 0)
	queueEvents(t, q, "a", 5)
	queueEvents(t, q, "b", 3)
	queueEvents(t, q, "c", 1)
	queueEvents(t, q, "d", 1)
	top, rest := q.top(2)
	if len(top) != 2 || top[0] != (TenantBuffered{"a", 5}) || top[1] != (TenantBuffered{"b", 3}) || rest != 2 {
		t.Errorf("got top %v rest %d, want [{a 5} {b 3}] and 2", top, rest)
	}
}

func TestFifoPushFrontAndCompaction(t *testing.T) {
	var f fifo[int]
	for i := range 3000 {
		f.push(i)
	}
	for i := range 2000 {
		if got := f.pop(); got != i {
			t.Fatalf("pop %d: got %d", i, got)
		}
	}
	f.pushFront(-1)
	if got := f.pop(); got != -1 {
		t.Fatalf("got %d after pushFront, want -1", got)
	}
	if got := f.len(); got != 1000 {
		t.Fatalf("got len %d, want 1000", got)
	}
	var g fifo[int]
	g.push(1)
	g.pushFront(0)
	if a, b := g.pop(), g.pop(); a != 0 || b != 1 {
		t.Errorf("got %d,%d, want 0,1", a, b)
	}
}

// BenchmarkFairQueue is the fair queue's cost per event: admit, push, pop
// and release, over 10k tenants.
func BenchmarkFairQueue(b *testing.B) {
	q := newFairQueue(0, 0, 25000)
	tenants := make([]string, 10000)
	for i := range tenants {
		tenants[i] = "t" + strconv.Itoa(i)
	}
	msg := &nats.Msg{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t, _ := q.admit(context.Background(), tenants[i%len(tenants)], true, nil)
		q.push(&pending{msg: msg, tenant: t}, false)
		if i%100 == 99 { // the sender takes events in bursts
			for p, _ := q.pop(time.Now()); p != nil; p, _ = q.pop(time.Now()) {
				q.release(p.tenant)
			}
		}
	}
}
