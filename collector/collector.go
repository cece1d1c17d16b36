package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/partition"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/collector/store"
)

// Store is what the collector needs from ClickHouse.
type Store interface {
	InsertEvents(ctx context.Context, rows []store.Row, ingestedAt time.Time) error
	ExistingIDs(ctx context.Context, keys []store.EventKey) (map[string]struct{}, error)
}

var _ Store = (*store.Store)(nil)

// Pricer prices an event for a tenant.
type Pricer interface {
	Price(tenant, kind string) (plan string, unit decimal.Decimal)
	Version() string
}

var _ Pricer = (*pricing.Book)(nil)

// Observer sees each stored event exactly once, after its batch is in
// ClickHouse. It is on the hot path: it must not block or allocate much, and
// it must not keep the pointer, since the batch reuses its events.
type Observer interface {
	Observe(e *event.Event, cost float64)
}

// Collector consumes usage events into ClickHouse.
type Collector struct {
	cfg       Config
	js        jetstream.JetStream
	store     Store
	pricer    Pricer
	validator *event.Validator
	observers []Observer
	log       *slog.Logger
	m         *metrics

	healthy atomic.Bool
	// Readiness (see Ready): the step being retried, whether the consumer
	// runs, its backlog at the last look, and the last fetch or ack.
	failing      atomic.Pointer[string]
	consuming    atomic.Bool
	pendingMsgs  atomic.Int64
	lastProgress atomic.Int64 // unix nanoseconds
	owner        *partition.Owner
	handover     Handover
	active       atomic.Pointer[slots] // the slots Run consumes; nil when it does not run
}

// Handover is told which tenants this replica owns whenever that changes:
// before the collector consumes a newly claimed partition, so the owner can
// warm-start those tenants first, and after a released partition has
// stopped. owns reports whether a tenant's partition is owned now; gained
// is false when partitions were only released, so nothing needs warming.
// The collector waits for it; an error is logged and consumption goes on.
type Handover interface {
	Owned(ctx context.Context, owns func(tenantID string) bool, gained bool) error
}

// Deps are the collector's collaborators.
type Deps struct {
	JetStream jetstream.JetStream
	Store     Store
	Pricer    Pricer
	Observers []Observer
	Registry  prometheus.Registerer
	Logger    *slog.Logger
	// Handover, when not nil, hears of every change of the owned tenants.
	Handover Handover
}

// New checks cfg and builds a collector; Run starts it.
func New(cfg Config, d Deps) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.JetStream == nil || d.Store == nil || d.Pricer == nil {
		return nil, errors.New("collector: JetStream, Store and Pricer are required")
	}
	v, err := event.NewValidator(event.Rules{CustomKinds: cfg.CustomKinds, Lateness: cfg.Lateness})
	if err != nil {
		return nil, fmt.Errorf("collector.custom_kinds: %w", err)
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	m, err := newMetrics(d.Registry)
	if err != nil {
		return nil, fmt.Errorf("collector metrics: %w", err)
	}
	owner, err := partition.New(partition.Config{Partitions: cfg.Partitions, LeaseTTL: cfg.LeaseTTL, Replicas: cfg.Stream.Replicas},
		partition.Deps{JetStream: d.JetStream, Registry: d.Registry, Logger: d.Logger})
	if err != nil {
		return nil, err
	}
	c := &Collector{
		cfg: cfg, js: d.JetStream, store: d.Store, pricer: d.Pricer, validator: v,
		observers: d.Observers, log: d.Logger.With("component", "collector"), m: m,
		owner: owner, handover: d.Handover,
	}
	c.healthy.Store(true)
	c.progress()
	return c, nil
}

// Healthy reports whether the last insert succeeded, for readiness checks.
func (c *Collector) Healthy() bool { return c.healthy.Load() }

// Run consumes the slots this replica owns until ctx ends; it returns nil
// on cancel. Messages of an unfinished batch are left unacked, to be
// redelivered.
func (c *Collector) Run(ctx context.Context) error {
	// NATS may still be starting: wait for it rather than exit.
	if err := c.retry(ctx, "create streams", 0, func() error { return EnsureStreams(ctx, c.js, c.cfg) }); err != nil {
		return nil // ctx ended
	}
	// The goroutines below end, and are waited for, before Run returns.
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	s := newSlots(c, ctx)
	c.active.Store(s)
	defer c.active.Store(nil)
	ownerErr := make(chan error, 1)
	wg.Add(2)
	go func() {
		defer wg.Done()
		ownerErr <- c.owner.Run(ctx, s)
	}()
	go func() {
		defer wg.Done()
		c.watchPending(ctx, s)
	}()
	c.log.Info("consuming the owned partitions", "stream", event.UsageStream, "durable", c.cfg.Durable, "count", c.cfg.Partitions)
	c.progress()
	c.consuming.Store(true)
	defer c.consuming.Store(false)
	loopErr := make(chan error, 1)
	go func() { loopErr <- c.loop(ctx, s.msgs) }()
	var err error
	select {
	case err = <-loopErr:
		cancel()
		if oerr := <-ownerErr; err == nil {
			err = oerr
		}
	case err = <-ownerErr:
		cancel()
		<-loopErr
	case err = <-s.failed:
		// An iterator ended by itself: a consumer or the stream was deleted,
		// or the connection closed. Stopping quietly would leave the daemon
		// up with nothing ingested; the unfinished batch stays unacked.
		cancel()
		<-loopErr
		<-ownerErr
		c.healthy.Store(false)
		c.m.healthy.Set(0)
	}
	return err
}

// item is what the slots' iterators feed the batch loop: a message, with
// the last stream sequence its consumer may replay although stored, or a
// barrier (flushed not nil) that flushes the batch and is then closed.
type item struct {
	msg        jetstream.Msg
	verifyUpTo uint64
	flushed    chan struct{}
}

// loop batches the slots' messages and flushes a batch when it is full
// (batch_max_rows), when it has waited batch_min_wait, or until
// batch_min_interval after the previous flush ended if that is later, and
// no message is waiting (idle: small batches, stored fast), or at
// batch_max_wait. Under load, messages arrive during each flush and the
// interval, so batches grow with the load up to batch_max_rows.
func (c *Collector) loop(ctx context.Context, msgs <-chan item) error {
	b := newBatch(c.cfg.BatchMaxRows)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var barrier chan struct{}
	lingered := false // the batch has waited its first wait; the timer runs to batch_max_wait
	var wait time.Duration
	var lastFlush time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case it := <-msgs:
			if it.flushed != nil {
				barrier = it.flushed
				timer.Stop()
				break
			}
			if len(b.msgs) == 0 {
				wait = c.firstWait(time.Since(lastFlush))
				timer.Reset(wait)
				lingered = false
			}
			c.add(b, it.msg, it.verifyUpTo)
			if len(b.msgs) < c.cfg.BatchMaxRows && (!lingered || len(msgs) > 0) {
				continue
			}
			timer.Stop()
		case <-timer.C:
			if !lingered && len(msgs) > 0 {
				lingered = true
				timer.Reset(c.cfg.BatchMaxWait - wait)
				continue
			}
		}
		flushed := len(b.msgs) > 0
		if err := c.flush(ctx, b); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if flushed {
			lastFlush = time.Now()
		}
		b.reset()
		if barrier != nil {
			close(barrier)
			barrier = nil
		}
	}
}

// firstWait is how long a batch whose first message arrives sinceFlush
// after the previous flush ended waits before it may be flushed:
// batch_min_wait, or the rest of batch_min_interval if that is longer, and
// never past batch_max_wait.
func (c *Collector) firstWait(sinceFlush time.Duration) time.Duration {
	return min(max(c.cfg.BatchMinWait, c.cfg.BatchMinInterval-sinceFlush), c.cfg.BatchMaxWait)
}

// watchPending reports the owned consumers' backlog every few seconds.
func (c *Collector) watchPending(ctx context.Context, s *slots) {
	t := time.NewTicker(c.pendingEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			var n int64
			for _, cons := range s.consumers() {
				qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				info, err := cons.Info(qctx)
				cancel()
				if err == nil {
					n += int64(info.NumPending) + int64(info.NumAckPending)
				}
			}
			c.pendingMsgs.Store(n)
			c.m.pending.Set(float64(n))
		}
	}
}

// Close releases nothing: Run owns the consumer and stops when its context
// ends, leaving an unfinished batch unacked. Close is there for the stage
// lifecycle and is safe to call any number of times.
func (c *Collector) Close() error { return nil }

// dlqMessage builds the dead-letter message for an invalid one.
// Its Tenantguard-Subject header is the subject the message was published
// to, rebuilt from the partitioned one.
func dlqMessage(msg jetstream.Msg, verr *event.ValidationError, partitions int) *nats.Msg {
	out := nats.NewMsg(event.DLQSubject(verr.Reason))
	out.Data = msg.Data()
	out.Header.Set(event.HeaderReason, verr.Error())
	original, _ := event.OriginalSubject(msg.Subject(), partitions)
	out.Header.Set(event.HeaderSubject, original)
	if id := msg.Headers().Get(event.HeaderMsgID); id != "" {
		out.Header.Set(event.HeaderOriginalMsgID, id)
	}
	if md, err := msg.Metadata(); err == nil {
		out.Header.Set(event.HeaderMsgID, event.DLQMsgID(md.Stream, md.Sequence.Stream))
	}
	return out
}
