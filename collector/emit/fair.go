package emit

import (
	"container/heap"
	"context"
	"fmt"
	"sort"
	"sync"
	"time"
)

// ErrTenantBufferFull is returned under the drop policy when the event's
// tenant already holds its share of the buffer (Config.TenantBuffer). It
// wraps ErrBufferFull, so errors.Is(err, ErrBufferFull) holds for both.
var ErrTenantBufferFull = fmt.Errorf("emit: tenant's share of the buffer full: %w", ErrBufferFull)

// sweepEvery is how often idle tenants are forgotten.
const sweepEvery = 10 * time.Second

// fairQueue holds accepted events in one FIFO per tenant and hands them to
// the sender round-robin, one event per tenant per turn, so a tenant with
// a deep queue waits its turn behind every other tenant with events. With
// a tenant rate set, a tenant whose token bucket is empty sits out until
// its next token is due; its events stay queued, and Emit for that tenant
// waits once it holds its share of the buffer.
type fairQueue struct {
	rate  float64 // events/s per tenant; 0 = unlimited
	burst float64
	share int // events one tenant may hold, accepted and unconfirmed; 0 = no share bound

	mu        sync.Mutex
	tenants   map[string]*tenantQueue
	ready     fifo[*tenantQueue] // tenants with events and tokens, in turn order
	later     deferHeap          // tenants with events waiting for a token
	queued    int
	deferrals uint64 // times a tenant sat out for want of a token
	waits     uint64 // Emit calls that found their tenant's share full
	nextSweep time.Time
	wake      chan struct{} // a token when events may be ready; cap 1
}

// tenantQueue is one tenant's state. The sweep forgets it once it holds
// nothing and its token bucket is full again, so memory follows the
// tenants active in the last sweepEvery.
type tenantQueue struct {
	id      string
	items   fifo[*pending]
	held    int  // events accepted and not yet confirmed (the share in use)
	waiting int  // Emit calls waiting for the share
	listed  bool // in ready or later
	tokens  float64
	stamp   time.Time
	due     time.Time     // when the next token arrives, while in later
	space   chan struct{} // closed when held drops, for Emit calls waiting on the share
	index   int           // in later
}

func newFairQueue(rate float64, burst, share int) *fairQueue {
	return &fairQueue{rate: rate, burst: float64(burst), share: share,
		tenants: map[string]*tenantQueue{}, wake: make(chan struct{}, 1)}
}

// admit takes one unit of tenant's share, waiting for one under the block
// policy. It returns the tenant's state, to be given to release later.
func (q *fairQueue) admit(ctx context.Context, tenant string, block bool, done <-chan struct{}) (*tenantQueue, error) {
	for {
		q.mu.Lock()
		t := q.tenants[tenant]
		if t == nil {
			t = &tenantQueue{id: tenant, tokens: q.burst, stamp: time.Now(), index: -1}
			q.tenants[tenant] = t
		}
		if q.share == 0 || t.held < q.share {
			t.held++
			q.mu.Unlock()
			return t, nil
		}
		q.waits++
		if !block {
			q.mu.Unlock()
			return nil, ErrTenantBufferFull
		}
		if t.space == nil {
			t.space = make(chan struct{})
		}
		space := t.space
		t.waiting++ // keeps t in the map while this call waits
		q.mu.Unlock()
		var err error
		select {
		case <-space:
		case <-ctx.Done():
			err = fmt.Errorf("emit: tenant's share of the buffer full: %w", ctx.Err())
		case <-done:
			err = ErrClosed
		}
		q.mu.Lock()
		t.waiting--
		q.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
}

// release gives back one unit of t's share: its event was confirmed, or
// never buffered.
func (q *fairQueue) release(t *tenantQueue) {
	q.mu.Lock()
	defer q.mu.Unlock()
	t.held--
	if t.space != nil {
		close(t.space)
		t.space = nil
	}
}

// forget drops t from the map when nothing refers to it any more and its
// bucket is full, so a returning tenant gets no more than it would have.
// Only the sweep calls it: a tenant that comes back within sweepEvery
// costs no allocation. Callers hold mu.
func (q *fairQueue) forget(t *tenantQueue, now time.Time) {
	if t.held > 0 || t.waiting > 0 || t.listed || t.items.len() > 0 {
		return
	}
	if q.rate > 0 {
		q.refill(t, now)
		if t.tokens < q.burst {
			return // the sweep forgets it later
		}
	}
	if q.tenants[t.id] == t {
		delete(q.tenants, t.id)
	}
}

// push queues p behind its tenant's other events; front puts it first
// (an event sent again after a failure).
func (q *fairQueue) push(p *pending, front bool) {
	q.mu.Lock()
	t := p.tenant
	if front {
		t.items.pushFront(p)
	} else {
		t.items.push(p)
	}
	q.queued++
	if !t.listed {
		t.listed = true
		q.ready.push(t)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pop returns the next event in turn, or nil and when the next tenant
// waiting for a token is due (zero when none is).
func (q *fairQueue) pop(now time.Time) (*pending, time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.later.Len() > 0 && !q.later[0].due.After(now) {
		t := heap.Pop(&q.later).(*tenantQueue)
		q.ready.push(t)
	}
	if now.After(q.nextSweep) {
		q.sweep(now)
	}
	for q.ready.len() > 0 {
		t := q.ready.pop()
		p := t.items.peek()
		if q.rate > 0 && !p.paid {
			q.refill(t, now)
			if t.tokens < 1 {
				t.due = now.Add(time.Duration((1 - t.tokens) / q.rate * float64(time.Second)))
				heap.Push(&q.later, t)
				q.deferrals++
				continue
			}
			t.tokens--
		}
		p.paid = true
		t.items.pop()
		q.queued--
		if t.items.len() > 0 {
			q.ready.push(t)
		} else {
			t.listed = false
		}
		return p, time.Time{}
	}
	if q.later.Len() > 0 {
		return nil, q.later[0].due
	}
	return nil, time.Time{}
}

func (q *fairQueue) refill(t *tenantQueue, now time.Time) {
	if d := now.Sub(t.stamp); d > 0 {
		t.tokens = min(q.burst, t.tokens+d.Seconds()*q.rate)
	}
	t.stamp = now
}

// sweep forgets idle tenants whose buckets have refilled. Callers hold mu.
func (q *fairQueue) sweep(now time.Time) {
	q.nextSweep = now.Add(sweepEvery)
	for _, t := range q.tenants {
		q.forget(t, now)
	}
}

// TenantBuffered is how many events one tenant holds in the buffer.
type TenantBuffered struct {
	Tenant   string
	Buffered int
}

// top returns the k tenants holding most events, most first, and the sum
// over every other tenant.
func (q *fairQueue) top(k int) ([]TenantBuffered, int) {
	q.mu.Lock()
	all := make([]TenantBuffered, 0, len(q.tenants))
	for _, t := range q.tenants {
		if t.held > 0 {
			all = append(all, TenantBuffered{Tenant: t.id, Buffered: t.held})
		}
	}
	q.mu.Unlock()
	sort.Slice(all, func(i, j int) bool {
		if all[i].Buffered != all[j].Buffered {
			return all[i].Buffered > all[j].Buffered
		}
		return all[i].Tenant < all[j].Tenant
	})
	rest := 0
	if len(all) > k {
		for _, t := range all[k:] {
			rest += t.Buffered
		}
		all = all[:k]
	}
	return all, rest
}

func (q *fairQueue) counters() (deferrals, waits uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.deferrals, q.waits
}

// deferHeap orders tenants waiting for a token by when it is due.
type deferHeap []*tenantQueue

func (h deferHeap) Len() int           { return len(h) }
func (h deferHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h deferHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *deferHeap) Push(x any) {
	t := x.(*tenantQueue)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *deferHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	t.index = -1
	*h = old[:len(old)-1]
	return t
}

// fifo is a slice-backed queue that reuses its array.
type fifo[T any] struct {
	buf  []T
	head int
}

func (f *fifo[T]) len() int { return len(f.buf) - f.head }

func (f *fifo[T]) push(v T) { f.buf = append(f.buf, v) }

func (f *fifo[T]) pushFront(v T) {
	if f.head > 0 {
		f.head--
		f.buf[f.head] = v
		return
	}
	f.buf = append(f.buf, v)
	copy(f.buf[1:], f.buf)
	f.buf[0] = v
}

func (f *fifo[T]) peek() T { return f.buf[f.head] }

func (f *fifo[T]) pop() T {
	var zero T
	v := f.buf[f.head]
	f.buf[f.head] = zero
	f.head++
	switch {
	case f.head == len(f.buf):
		f.buf, f.head = f.buf[:0], 0
	case f.head > 1024 && f.head > len(f.buf)/2:
		n := copy(f.buf, f.buf[f.head:])
		clear(f.buf[n:])
		f.buf, f.head = f.buf[:n], 0
	}
	return v
}
