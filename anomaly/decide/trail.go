package decide

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/backoff"
	"github.com/tenantguard/tenantguard/limiter"
)

// Recorder keeps the audit trail; *ClickHouseRecorder is one.
type Recorder interface {
	// Record appends records.
	Record(ctx context.Context, rs []Record) error
	// LastRevision returns the highest KV revision recorded, 0 if none.
	LastRevision(ctx context.Context) (uint64, error)
	// Recorded returns which of revs are recorded already.
	Recorded(ctx context.Context, revs []uint64) (map[uint64]bool, error)
}

var _ Recorder = (*ClickHouseRecorder)(nil)

// TrailDeps are the trail's clients. Conn, Recorder and Verifier are
// required.
type TrailDeps struct {
	Conn     *nats.Conn
	Recorder Recorder
	// Verifier judges each put: the daemon's own key and
	// decisions.trusted_keys (limiter.Publisher.Verifier).
	Verifier   *limiter.Verifier
	Registerer prometheus.Registerer // nil: no metrics
	Logger     *slog.Logger
	// Observer is told every revision the trail sees, in bucket order, so
	// what shows live decisions (gauges, a live view) follows the bucket
	// without polling it. Optional; it must not block.
	Observer Observer
}

// Observer sees each revision of the decisions bucket the trail records.
type Observer interface {
	ObserveDecision(r Record)
}

// Trail follows the KV bucket tenantguard_decisions and records every
// revision it sees in the audit table once: puts, whoever wrote them and
// whether they verify, deletes and purges. It resumes after the highest
// revision the table holds, so a restart neither skips nor repeats one
// (revisions overwritten in the bucket while the daemon was down are gone:
// the bucket keeps one value per key).
type Trail struct {
	cfg   Config
	deps  TrailDeps
	log   *slog.Logger
	audit *auditor

	unverified *prometheus.CounterVec
	dropped    prometheus.Counter
	failures   prometheus.Counter
	pendingG   prometheus.GaugeFunc
	rejectLog  rateLog
	logMu      sync.Mutex

	closeOnce sync.Once
	closed    chan struct{}
}

// NewTrail returns a trail; cfg gives audit_queue_size and audit_timeout.
func NewTrail(cfg Config, deps TrailDeps) (*Trail, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Conn == nil || deps.Recorder == nil || deps.Verifier == nil {
		return nil, errors.New("decide: TrailDeps.Conn, Recorder and Verifier are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	t := &Trail{
		cfg: cfg, deps: deps, closed: make(chan struct{}),
		log: deps.Logger.With("component", "decisions-audit"),
		unverified: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_decisions_unverified_total",
			Help: "Puts in the decisions bucket that did not verify (written without a trusted key, tampered with, or invalid), by reason. Limiters ignore them.",
		}, []string{"reason"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenantguard_decisions_audit_dropped_total",
			Help: "Decision revisions still unwritten to the ClickHouse audit table at shutdown; the next start records those still in the bucket.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenantguard_decisions_audit_errors_total",
			Help: "Failed inserts into the ClickHouse audit table (each retried).",
		}),
		rejectLog: rateLog{every: auditLogEvery},
	}
	t.audit = newAuditor(deps.Recorder, cfg.AuditQueueSize, cfg.AuditTimeout, t.log, t.dropped, t.failures)
	t.pendingG = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tenantguard_decisions_audit_pending",
		Help: "Decision revisions waiting to be written to the ClickHouse audit table.",
	}, func() float64 { return float64(t.audit.pending()) })
	for _, r := range limiter.RejectReasons {
		t.unverified.WithLabelValues(r)
	}
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{t.unverified, t.dropped, t.failures, t.pendingG} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return t, nil
}

// Close stops Run; it is idempotent.
func (t *Trail) Close() error {
	t.closeOnce.Do(func() { close(t.closed) })
	return nil
}

// Run records revisions until ctx ends or Close; it returns nil then, after
// the writer's last attempt (bounded by audit_timeout) at what is pending.
// It waits for ClickHouse to learn where to resume, and for NATS, without
// failing.
func (t *Trail) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-t.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	// The writer's context ends only in stopAudit, after the deadline of
	// its last attempt is set.
	actx, acancel := context.WithCancel(context.WithoutCancel(ctx))
	go t.audit.run(actx)
	defer t.stopAudit(acancel)

	js, err := jetstream.New(t.deps.Conn)
	if err != nil {
		return err
	}
	status := t.deps.Conn.StatusChanged(nats.CONNECTED)
	defer t.deps.Conn.RemoveStatusListener(status)
	next, ok := t.resumePoint(ctx)
	if !ok {
		return nil
	}
	wait := backoff.New(backoff.Policy{Min: auditBackoffMin, Max: auditBackoffMax})
	for ctx.Err() == nil {
		n, err := t.watch(ctx, js, next, status)
		if n > next {
			wait.Reset()
		}
		next = n
		if err == nil {
			continue
		}
		if ctx.Err() == nil && !errors.Is(err, errRewatch) {
			t.log.Warn("decisions watch ended; re-watching", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait.Next()):
		}
	}
	return nil
}

// stopAudit ends the audit writer and waits for its last attempt, at most
// audit_timeout and a second. The ClickHouse driver does not always honour
// a context (a server that accepts and never answers holds a dial for the
// driver's dial timeout); the writer then finishes on its own soon after,
// counting what it could not write as dropped.
func (t *Trail) stopAudit(cancel context.CancelFunc) {
	by := t.audit.stop()
	cancel()
	if !t.audit.wait(by.Add(time.Second)) {
		t.log.Warn("audit writer still blocked on ClickHouse; not waiting for it", "count", t.audit.pending())
	}
}

// resumePoint returns the first revision to record: one past the highest
// the table holds. It retries until ClickHouse answers or ctx ends.
func (t *Trail) resumePoint(ctx context.Context) (uint64, bool) {
	wait := backoff.New(backoff.Policy{Min: auditBackoffMin, Max: auditBackoffMax})
	type answer struct {
		last uint64
		err  error
	}
	for {
		// The driver does not always honour a context; never wait past ctx.
		qctx, cancel := context.WithTimeout(ctx, t.cfg.AuditTimeout)
		c := make(chan answer, 1)
		go func() {
			last, err := t.deps.Recorder.LastRevision(qctx)
			c <- answer{last, err}
		}()
		var a answer
		select {
		case a = <-c:
		case <-ctx.Done():
			cancel()
			return 0, false
		}
		cancel()
		last, err := a.last, a.err
		if err == nil {
			return last + 1, true
		}
		if ctx.Err() != nil {
			return 0, false
		}
		t.log.Warn("audit table not readable; waiting to learn where to resume", "err", err)
		select {
		case <-ctx.Done():
			return 0, false
		case <-time.After(wait.Next()):
		}
	}
}

var (
	errRewatch       = errors.New("reconnected")
	errWatcherClosed = errors.New("watcher closed")
)

// watch follows the bucket from revision next and queues a Record per
// revision; it returns the next revision to record. The nats.go watcher
// does not recover after a lost connection (nats.go issue #1777), so it
// returns on every reconnect. While the writer's queue is full it stops
// watching and returns, with no error, once there is room again, so no
// revision is dropped while ClickHouse is slow or down.
func (t *Trail) watch(ctx context.Context, js jetstream.JetStream, next uint64, reconnect <-chan nats.Status) (uint64, error) {
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	kv, err := js.KeyValue(octx, event.DecisionsBucket)
	if err == nil && next > 1 {
		var st jetstream.KeyValueStatus
		if st, err = kv.Status(octx); err == nil {
			if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo().State.LastSeq < next-1 {
				t.log.Warn("the decisions bucket is behind the audit table (recreated?); recording it from its start",
					"count", bs.StreamInfo().State.LastSeq)
				next = 1
			}
		}
	}
	cancel()
	if err != nil {
		return next, fmt.Errorf("open bucket %s: %w", event.DecisionsBucket, err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	w, err := kv.WatchAll(wctx, jetstream.ResumeFromRevision(next))
	if err != nil {
		return next, fmt.Errorf("watch bucket %s: %w", event.DecisionsBucket, err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return next, nil
		case <-reconnect:
			return next, errRewatch
		case e, ok := <-w.Updates():
			if !ok {
				return next, errWatcherClosed
			}
			if e == nil || e.Revision() < next {
				continue // the end of the initial values, or a revision recorded already
			}
			r := t.record(e)
			select {
			case t.audit.q <- r:
				next = e.Revision() + 1
				if t.deps.Observer != nil {
					t.deps.Observer.ObserveDecision(r)
				}
			default:
				_ = w.Stop()
				t.waitForRoom(ctx)
				return next, nil
			}
		}
	}
}

// waitForRoom waits until the writer's queue is at most half full.
func (t *Trail) waitForRoom(ctx context.Context) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for len(t.audit.q) > cap(t.audit.q)/2 {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// record turns a watch entry into a Record, verifying a put.
func (t *Trail) record(e jetstream.KeyValueEntry) Record {
	r := Record{Key: e.Key(), Revision: e.Revision(), At: e.Created().UTC()}
	switch e.Operation() {
	case jetstream.KeyValuePut:
		r.Op = OpPut
		d, err := t.deps.Verifier.Check(e.Key(), e.Value(), time.Now())
		r.Decision = d
		if err == nil {
			r.Verified = true
			break
		}
		r.Reject = limiter.RejectReason(err)
		r.Raw = append([]byte(nil), e.Value()[:min(len(e.Value()), limiter.MaxDecisionSize)]...)
		t.unverified.WithLabelValues(r.Reject).Inc()
		t.logMu.Lock()
		ok := t.rejectLog.allow(time.Now())
		t.logMu.Unlock()
		if ok {
			t.log.Warn("a decision in the bucket does not verify; limiters ignore it", "key", e.Key(),
				"reason", r.Reject, "err", err)
		}
	case jetstream.KeyValuePurge:
		r.Op = OpPurge
	default:
		r.Op = OpDelete
	}
	return r
}
