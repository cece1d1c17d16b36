package notify

import (
	"sync"

	"github.com/tenantguard/tenantguard/anomaly"
)

// queue is a bounded FIFO ring of alerts. push never blocks: when full it
// evicts the oldest alert or refuses the new one, by policy.
type queue struct {
	mu         sync.Mutex
	buf        []anomaly.Alert
	head, n    int
	dropOldest bool
	ready      chan struct{} // holds a token while the queue is not empty
}

func newQueue(size int, dropOldest bool) *queue {
	return &queue{buf: make([]anomaly.Alert, size), dropOldest: dropOldest, ready: make(chan struct{}, 1)}
}

// push adds a; it reports whether an alert (a or the oldest) was dropped,
// and the length after the push.
func (q *queue) push(a anomaly.Alert) (dropped bool, length int) {
	q.mu.Lock()
	if q.n == len(q.buf) {
		if !q.dropOldest {
			n := q.n
			q.mu.Unlock()
			return true, n
		}
		q.buf[q.head] = anomaly.Alert{}
		q.head = (q.head + 1) % len(q.buf)
		q.n--
		dropped = true
	}
	q.buf[(q.head+q.n)%len(q.buf)] = a
	q.n++
	length = q.n
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return dropped, length
}

// popBatch moves up to max alerts into dst and returns it with the length left.
func (q *queue) popBatch(dst []anomaly.Alert, max int) ([]anomaly.Alert, int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.n > 0 && len(dst) < max {
		dst = append(dst, q.buf[q.head])
		q.buf[q.head] = anomaly.Alert{}
		q.head = (q.head + 1) % len(q.buf)
		q.n--
	}
	if q.n > 0 {
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
	return dst, q.n
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}
