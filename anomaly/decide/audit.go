package decide

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/internal/backoff"
)

const (
	// auditBatchMax bounds the decisions written in one insert.
	auditBatchMax = 256
	// auditBackoffMin and auditBackoffMax bound the wait between retries
	// of a failed insert.
	auditBackoffMin = 500 * time.Millisecond
	auditBackoffMax = 10 * time.Second
	// auditLogEvery is the least time between two log lines about failed
	// inserts.
	auditLogEvery = time.Minute
)

// auditor writes the audit trail from its own goroutine, so neither the
// engine nor the KV watch waits on ClickHouse. Records wait in a bounded
// queue that the Trail fills (it pauses its watch while the queue is full).
// A failed insert is retried with backoff, keeping its batch, until it
// succeeds or the trail stops; before each retry the revisions an insert
// that failed late may have stored anyway are dropped from the batch, so
// each revision is recorded once.
type auditor struct {
	rec     Recorder
	q       chan Record
	timeout time.Duration
	log     *slog.Logger

	dropped  prometheus.Counter
	failures prometheus.Counter
	inFlight atomic.Int64 // the batch being written or retried, for the gauge
	stopBy   atomic.Int64 // unix nanoseconds: the end of the last attempt at shutdown
	done     chan struct{}

	logMu   sync.Mutex
	failLog rateLog
}

func newAuditor(rec Recorder, size int, timeout time.Duration, log *slog.Logger,
	dropped, failures prometheus.Counter) *auditor {
	return &auditor{rec: rec, q: make(chan Record, size), timeout: timeout, log: log,
		dropped: dropped, failures: failures, done: make(chan struct{}),
		failLog: rateLog{every: auditLogEvery}}
}

// pending returns the records not yet written: queued and in flight.
func (a *auditor) pending() int { return len(a.q) + int(a.inFlight.Load()) }

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

// run writes queued records until ctx ends, then makes one last attempt,
// until the deadline stop set, for what is still pending.
func (a *auditor) run(ctx context.Context) {
	defer close(a.done)
	var batch []Record
	wait := backoff.New(backoff.Policy{Min: auditBackoffMin, Max: auditBackoffMax})
	retry := false
	for {
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				a.flushOnStop(nil)
				return
			case r := <-a.q:
				batch = append(batch, r)
			}
		}
	fill:
		for len(batch) < auditBatchMax {
			select {
			case r := <-a.q:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		a.inFlight.Store(int64(len(batch)))
		err := a.write(ctx, batch, retry)
		if err == nil {
			batch, retry = batch[:0], false
			wait.Reset()
			a.inFlight.Store(0)
			continue
		}
		if ctx.Err() != nil {
			a.flushOnStop(batch)
			return
		}
		retry = true
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
		case <-time.After(wait.Next()):
		}
	}
}

// write inserts batch; after a failure (retry) it first leaves out the
// revisions already recorded. The batch is changed in place.
func (a *auditor) write(ctx context.Context, batch []Record, retry bool) error {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	if retry {
		if err := a.dedupe(ctx, &batch); err != nil {
			return err
		}
	}
	return a.rec.Record(ctx, batch)
}

// dedupe removes from *batch the revisions the recorder already holds.
func (a *auditor) dedupe(ctx context.Context, batch *[]Record) error {
	revs := make([]uint64, 0, len(*batch))
	for _, r := range *batch {
		revs = append(revs, r.Revision)
	}
	have, err := a.rec.Recorded(ctx, revs)
	if err != nil {
		return err
	}
	kept := (*batch)[:0]
	for _, r := range *batch {
		if !have[r.Revision] {
			kept = append(kept, r)
		}
	}
	*batch = kept
	return nil
}

// flushOnStop makes one attempt to write batch and everything queued, with
// a fresh context ending at the deadline stop set (the trail's context has
// ended); what fails, or is left when the deadline has passed (a write that
// ignored its context ran past it), is counted as dropped. The next start
// resumes after the last recorded revision, so dropped records that are
// still in the bucket are recorded then.
func (a *auditor) flushOnStop(batch []Record) {
	for {
		select {
		case r := <-a.q:
			batch = append(batch, r)
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
	if err := a.write(ctx, batch, true); err != nil {
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
