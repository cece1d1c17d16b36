package decide

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/limiter"
)

const (
	// auditBatchMax bounds the decisions written in one insert.
	auditBatchMax = 256
	// auditBackoffMin and auditBackoffMax bound the wait between retries
	// of a failed insert.
	auditBackoffMin = 500 * time.Millisecond
	auditBackoffMax = 10 * time.Second
	// auditLogEvery is the least time between two log lines about drops,
	// and between two about failed inserts.
	auditLogEvery = time.Minute
)

// auditor writes the audit trail from its own goroutine, so the engine never
// waits on ClickHouse. Decisions wait in a bounded queue; when it is full
// they are dropped and counted. A failed insert is retried with backoff,
// keeping its batch, until it succeeds or the engine stops.
type auditor struct {
	rec     Recorder
	q       chan limiter.Decision
	timeout time.Duration
	log     *slog.Logger

	dropped  prometheus.Counter
	failures prometheus.Counter
	inFlight atomic.Int64 // the batch being written or retried, for the gauge
	stopBy   atomic.Int64 // unix nanoseconds: the end of the last attempt at shutdown
	done     chan struct{}

	logMu     sync.Mutex
	dropLog   rateLog
	failLog   rateLog
	dropCount int // drops since the last drop log line
}

func newAuditor(rec Recorder, size int, timeout time.Duration, log *slog.Logger,
	dropped, failures prometheus.Counter) *auditor {
	return &auditor{rec: rec, q: make(chan limiter.Decision, size), timeout: timeout, log: log,
		dropped: dropped, failures: failures, done: make(chan struct{}),
		dropLog: rateLog{every: auditLogEvery}, failLog: rateLog{every: auditLogEvery}}
}

// pending returns the decisions not yet written: queued and in flight.
func (a *auditor) pending() int { return len(a.q) + int(a.inFlight.Load()) }

// enqueue queues d for the audit trail; it never blocks.
func (a *auditor) enqueue(d limiter.Decision) {
	select {
	case a.q <- d:
	default:
		a.drop(1, "audit queue full; decision not recorded")
	}
}

// drop counts n decisions that will never reach the audit trail, and logs
// at most once per auditLogEvery with the count since the last line.
func (a *auditor) drop(n int, msg string) {
	a.dropped.Add(float64(n))
	a.logMu.Lock()
	a.dropCount += n
	count := a.dropCount
	ok := a.dropLog.allow(time.Now())
	if ok {
		a.dropCount = 0
	}
	a.logMu.Unlock()
	if ok {
		a.log.Warn(msg, "count", count)
	}
}

// stop sets the deadline of the last attempt, a timeout from now; call it
// before ending run's context.
func (a *auditor) stop() time.Time {
	by := time.Now().Add(a.timeout)
	a.stopBy.Store(by.UnixNano())
	return by
}

// wait waits for run to return until by; it reports whether it did.
func (a *auditor) wait(by time.Time) bool {
	t := time.NewTimer(time.Until(by))
	defer t.Stop()
	select {
	case <-a.done:
		return true
	case <-t.C:
		return false
	}
}

// run writes queued decisions until ctx ends, then makes one last attempt,
// until the deadline stop set, for what is still pending.
func (a *auditor) run(ctx context.Context) {
	defer close(a.done)
	var batch []limiter.Decision
	backoff := auditBackoffMin
	for {
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				a.flushOnStop(nil)
				return
			case d := <-a.q:
				batch = append(batch, d)
			}
		}
	fill:
		for len(batch) < auditBatchMax {
			select {
			case d := <-a.q:
				batch = append(batch, d)
			default:
				break fill
			}
		}
		a.inFlight.Store(int64(len(batch)))
		err := a.write(ctx, batch)
		if err == nil {
			batch, backoff = batch[:0], auditBackoffMin
			a.inFlight.Store(0)
			continue
		}
		if ctx.Err() != nil {
			a.flushOnStop(batch)
			return
		}
		a.failures.Inc()
		a.logMu.Lock()
		ok := a.failLog.allow(time.Now())
		a.logMu.Unlock()
		if ok {
			a.log.Warn("record decisions; retrying", "count", len(batch), "err", err)
		}
		select {
		case <-ctx.Done():
			a.flushOnStop(batch)
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, auditBackoffMax)
	}
}

func (a *auditor) write(ctx context.Context, batch []limiter.Decision) error {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	return a.rec.Record(ctx, batch)
}

// flushOnStop makes one attempt to write batch and everything queued, with
// a fresh context ending at the deadline stop set (the engine's context has
// ended); what fails, or is left when the deadline has passed (a write that
// ignored its context ran past it), is counted as dropped.
func (a *auditor) flushOnStop(batch []limiter.Decision) {
	for {
		select {
		case d := <-a.q:
			batch = append(batch, d)
			continue
		default:
		}
		break
	}
	defer a.inFlight.Store(0)
	if len(batch) == 0 {
		return
	}
	by := time.Unix(0, a.stopBy.Load())
	if time.Until(by) <= 0 {
		a.dropped.Add(float64(len(batch)))
		a.log.Warn("decisions not recorded at shutdown: no time left", "count", len(batch))
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), by)
	defer cancel()
	if err := a.rec.Record(ctx, batch); err != nil {
		a.failures.Inc()
		a.dropped.Add(float64(len(batch)))
		a.log.Warn("decisions not recorded at shutdown", "count", len(batch), "err", err)
	}
}

// rateLog allows one log line per every.
type rateLog struct {
	every time.Duration
	last  time.Time
}

func (r *rateLog) allow(now time.Time) bool {
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		return false
	}
	r.last = now
	return true
}
