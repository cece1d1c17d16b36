package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/anomaly"
)

// Notifier delivers alerts to one system. The Fanout calls it from one
// goroutine only, with the alerts queued since the last call, oldest first.
// It retries on its own and reports what happened in the Result.
type Notifier interface {
	Name() string
	Notify(ctx context.Context, alerts []anomaly.Alert) (Result, error)
}

// Resender is a Notifier that also re-sends on a timer, from the same
// goroutine as Notify.
type Resender interface {
	Notifier
	ResendEvery() time.Duration
	Resend(ctx context.Context, now time.Time) (Result, error)
}

// Result counts the outcome of one Notify or Resend call. Alerts neither
// sent nor failed were suppressed (already delivered recently).
type Result struct {
	Sent    int // deliveries that succeeded
	Failed  int // deliveries that failed after all retries
	Retries int // retried attempts
}

// Deps are the clients and hooks a Fanout is built with. NATS and
// ClickHouse are required when their sink is enabled.
type Deps struct {
	Logger     *slog.Logger          // default slog.Default()
	Registerer prometheus.Registerer // nil: metrics are kept but not registered
	NATS       *nats.Conn            // for alerts.nats
	ClickHouse AnomalyWriter         // for alerts.clickhouse: *store.Store
	Notifiers  []Notifier            // extra sinks, after the configured ones
}

// maxBatch bounds the alerts handed to one Notify call.
const maxBatch = 500

// Fanout hands each alert to every sink without blocking the caller. It
// implements the detector's Sink interface.
type Fanout struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics
	sinks []*worker

	closed    atomic.Bool
	stop      chan struct{} // closed by Close
	closeOnce sync.Once
	running   atomic.Bool
	runDone   chan struct{} // closed when Run returns
}

type worker struct {
	n  Notifier
	q  *queue
	st *sinkStats
}

// New validates cfg and builds the sinks it enables, plus deps.Notifiers.
func New(cfg Config, deps Deps) (*Fanout, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "notify")
	var ns []Notifier
	if len(cfg.Alertmanager.URLs) > 0 {
		am, err := NewAlertmanager(cfg.Alertmanager)
		if err != nil {
			return nil, err
		}
		ns = append(ns, am)
	}
	if cfg.Webhook.URL != "" {
		wh, err := NewWebhook(cfg.Webhook)
		if err != nil {
			return nil, err
		}
		ns = append(ns, wh)
	}
	if cfg.NATS.Enabled {
		if deps.NATS == nil {
			return nil, errors.New("alerts.nats.enabled: true but no NATS connection was given")
		}
		ns = append(ns, NewNATS(deps.NATS))
	}
	if cfg.ClickHouse.Enabled {
		if deps.ClickHouse == nil {
			return nil, errors.New("alerts.clickhouse.enabled: true but no ClickHouse store was given")
		}
		ns = append(ns, NewClickHouse(deps.ClickHouse, cfg.ClickHouse))
	}
	ns = append(ns, deps.Notifiers...)

	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	f := &Fanout{cfg: cfg, log: log, m: m, stop: make(chan struct{}), runDone: make(chan struct{})}
	seen := map[string]bool{}
	for _, n := range ns {
		if seen[n.Name()] {
			return nil, fmt.Errorf("notify: two sinks named %q", n.Name())
		}
		seen[n.Name()] = true
		f.sinks = append(f.sinks, &worker{n: n, q: newQueue(cfg.QueueSize, cfg.Overflow == DropOldest), st: m.forSink(n.Name())})
	}
	return f, nil
}

// Sinks returns the names of the sinks, in delivery order.
func (f *Fanout) Sinks() []string {
	names := make([]string, len(f.sinks))
	for i, w := range f.sinks {
		names[i] = w.n.Name()
	}
	return names
}

// Send queues a for every sink and returns at once: it never blocks on a
// sink. A full queue drops per Config.Overflow and counts the drop; after
// Close every alert is dropped and counted.
func (f *Fanout) Send(_ context.Context, a anomaly.Alert) {
	if (a.TenantID == "") == (a.Database == "") || a.Metric == "" || a.Fingerprint == "" || a.StartsAt.IsZero() ||
		(a.Status != anomaly.StatusFiring && a.Status != anomaly.StatusResolved) {
		f.m.invalid.Inc()
		f.log.Warn("alert refused: it needs a tenant or (for a Postgres finding) a database, a metric, a fingerprint, a start time and a status",
			"tenant", a.TenantID, "metric", a.Metric)
		return
	}
	a.Observed, a.Baseline, a.Ratio = finite(a.Observed), finite(a.Baseline), finite(a.Ratio)
	if a.Labels != nil {
		a.Labels = maps.Clone(a.Labels) // the caller may reuse its map
	}
	if a.Status == anomaly.StatusResolved && a.EndsAt.IsZero() {
		a.EndsAt = time.Now()
	}
	for _, w := range f.sinks {
		if f.closed.Load() {
			w.st.dropped.Inc()
			continue
		}
		dropped, n := w.q.push(a)
		if dropped {
			w.st.dropped.Inc()
		}
		w.st.queueLen.Set(float64(n))
	}
}

// finite maps NaN to 0 and ±Inf to ±MaxFloat64, which JSON can carry.
func finite(x float64) float64 {
	switch {
	case math.IsNaN(x):
		return 0
	case math.IsInf(x, 1):
		return math.MaxFloat64
	case math.IsInf(x, -1):
		return -math.MaxFloat64
	}
	return x
}

// Run delivers queued alerts until ctx is cancelled or Close is called,
// then keeps delivering what is queued for at most Config.DrainTimeout and
// drops (and counts) the rest. It returns nil on a normal stop.
func (f *Fanout) Run(ctx context.Context) error {
	if !f.running.CompareAndSwap(false, true) {
		if f.closed.Load() {
			return nil // Close already drained
		}
		return errors.New("notify: Run called twice")
	}
	defer close(f.runDone)
	f.run(ctx)
	return nil
}

func (f *Fanout) run(ctx context.Context) {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-f.stop:
			cancel()
		case <-runCtx.Done():
		}
	}()
	// Deliveries outlive runCtx by the drain timeout, so an alert in flight
	// at shutdown is not cut off mid-retry unless the deadline passes.
	deliverCtx, stopDeliver := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDeliver()
	go func() {
		<-runCtx.Done()
		t := time.NewTimer(f.cfg.DrainTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			stopDeliver()
		case <-deliverCtx.Done():
		}
	}()

	var wg sync.WaitGroup
	for _, w := range f.sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.work(runCtx, deliverCtx, w)
		}()
	}
	wg.Wait()
	f.closed.Store(true)
	f.closeSinks()
}

func (f *Fanout) work(runCtx, deliverCtx context.Context, w *worker) {
	var tick <-chan time.Time
	rs, isResender := w.n.(Resender)
	if isResender {
		t := time.NewTicker(rs.ResendEvery())
		defer t.Stop()
		tick = t.C
	}
	batch := make([]anomaly.Alert, 0, maxBatch)
	for {
		select {
		case <-runCtx.Done():
			f.drain(deliverCtx, w, batch)
			return
		case <-w.q.ready:
			if runCtx.Err() != nil { // shutting down: the drain deadline applies
				f.drain(deliverCtx, w, batch)
				return
			}
			var left int
			batch, left = w.q.popBatch(batch[:0], maxBatch)
			w.st.queueLen.Set(float64(left))
			if len(batch) > 0 {
				f.deliver(deliverCtx, w, len(batch), func(ctx context.Context) (Result, error) { return w.n.Notify(ctx, batch) })
			}
		case now := <-tick:
			f.deliver(deliverCtx, w, 0, func(ctx context.Context) (Result, error) { return rs.Resend(ctx, now) })
		}
	}
}

// drain delivers what is queued until the queue is empty or ctx ends, then
// counts whatever is left as dropped.
func (f *Fanout) drain(ctx context.Context, w *worker, batch []anomaly.Alert) {
	for ctx.Err() == nil {
		batch, _ = w.q.popBatch(batch[:0], maxBatch)
		if len(batch) == 0 {
			break
		}
		f.deliver(ctx, w, len(batch), func(ctx context.Context) (Result, error) { return w.n.Notify(ctx, batch) })
	}
	var left int
	batch, left = w.q.popBatch(batch[:0], w.q.len()+1)
	if n := len(batch) + left; n > 0 {
		w.st.dropped.Add(float64(n))
		f.log.Warn("alerts dropped at shutdown: drain timeout passed", "sink", w.n.Name(), "count", n)
	}
	w.st.queueLen.Set(0)
}

func (f *Fanout) deliver(ctx context.Context, w *worker, n int, call func(context.Context) (Result, error)) {
	start := time.Now()
	res, err := call(ctx)
	w.st.sent.Add(float64(res.Sent))
	w.st.failed.Add(float64(res.Failed))
	w.st.retries.Add(float64(res.Retries))
	if err != nil {
		f.log.Warn("alert delivery failed", "sink", w.n.Name(), "count", n, "failed", res.Failed,
			"duration", time.Since(start), "err", err)
	}
}

// Close stops accepting alerts, drains the queues (within
// Config.DrainTimeout) and releases the sinks. If Run is running, Close ends
// it and waits for it; if Run never started, Close drains by itself. It is
// idempotent.
func (f *Fanout) Close() error {
	f.closeOnce.Do(func() {
		f.closed.Store(true)
		close(f.stop)
		if !f.running.CompareAndSwap(false, true) {
			<-f.runDone // Run drains and closes the sinks
			return
		}
		defer close(f.runDone)
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // straight to the drain
		f.run(ctx)
	})
	return nil
}

func (f *Fanout) closeSinks() {
	for _, w := range f.sinks {
		if c, ok := w.n.(io.Closer); ok {
			if err := c.Close(); err != nil {
				f.log.Warn("close sink", "sink", w.n.Name(), "err", err)
			}
		}
	}
}
