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
	// verifyUpTo is the last stream sequence that may already be stored
	// although JetStream delivers it for the first time: set when Run had to
	// create the durable consumer, which then replays the retained stream.
	verifyUpTo uint64
}

// Deps are the collector's collaborators.
type Deps struct {
	JetStream jetstream.JetStream
	Store     Store
	Pricer    Pricer
	Observers []Observer
	Registry  prometheus.Registerer
	Logger    *slog.Logger
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
	c := &Collector{
		cfg: cfg, js: d.JetStream, store: d.Store, pricer: d.Pricer, validator: v,
		observers: d.Observers, log: d.Logger.With("component", "collector"), m: m,
	}
	c.healthy.Store(true)
	c.progress()
	return c, nil
}

// Healthy reports whether the last insert succeeded, for readiness checks.
func (c *Collector) Healthy() bool { return c.healthy.Load() }

// EnsureStreams creates or updates TENANTGUARD_USAGE and TENANTGUARD_DLQ.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) error {
	usage := jetstream.StreamConfig{
		Name:        event.UsageStream,
		Description: "tenantguard usage events, wire format v1",
		Subjects:    []string{event.UsageSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  cfg.DuplicateWindow,
		MaxAge:      cfg.MaxAge,
		MaxBytes:    cfg.MaxBytes,
		MaxMsgSize:  event.MaxSize * 2, // bigger ones still reach the DLQ with a reason
		Replicas:    cfg.Replicas,
		Discard:     jetstream.DiscardOld,
	}
	usage.AllowBatchPublish = true // the emitter's fast batch publishing (nats-server >= 2.14)
	if _, err := js.CreateOrUpdateStream(ctx, usage); err != nil {
		return fmt.Errorf("create stream %s: %w", event.UsageStream, err)
	}
	dlq := jetstream.StreamConfig{
		Name:        event.DLQStream,
		Description: "tenantguard events that failed validation; header Tenantguard-Reason says why",
		Subjects:    []string{event.DLQSubjects},
		Storage:     jetstream.FileStorage,
		Duplicates:  cfg.DuplicateWindow,
		MaxAge:      cfg.DLQMaxAge,
		Replicas:    cfg.Replicas,
	}
	if _, err := js.CreateOrUpdateStream(ctx, dlq); err != nil {
		return fmt.Errorf("create stream %s: %w", event.DLQStream, err)
	}
	return nil
}

// Run consumes until ctx ends; it returns nil on cancel. Messages of an
// unfinished batch are left unacked, to be redelivered.
func (c *Collector) Run(ctx context.Context) error {
	// NATS may still be starting: wait for it rather than exit.
	if err := c.retry(ctx, "create streams", 0, func() error { return EnsureStreams(ctx, c.js, c.cfg.Stream) }); err != nil {
		return nil // ctx ended
	}
	if err := c.noteFreshConsumer(ctx); err != nil {
		return err
	}
	cons, err := c.js.CreateOrUpdateConsumer(ctx, event.UsageStream, jetstream.ConsumerConfig{
		Durable:       c.cfg.Durable,
		Description:   "tenantguard collector",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.cfg.AckWait,
		MaxAckPending: c.cfg.MaxAckPending,
		MaxDeliver:    -1,
		FilterSubject: event.UsageSubjects,
	})
	if err != nil {
		return fmt.Errorf("create consumer %s: %w", c.cfg.Durable, err)
	}
	iter, err := cons.Messages(jetstream.PullMaxMessages(min(c.cfg.BatchMaxRows*2, c.cfg.MaxAckPending)))
	if err != nil {
		return fmt.Errorf("consume %s: %w", event.UsageStream, err)
	}
	// The goroutines below end, and are waited for, before Run returns.
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	defer iter.Stop()
	msgs := make(chan jetstream.Msg, c.cfg.BatchMaxRows)
	var iterErr error // why the iterator ended; written before msgs is closed
	wg.Add(2)
	go func() {
		defer wg.Done()
		defer close(msgs)
		for {
			msg, err := iter.Next()
			if err != nil {
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					if iterErr == nil {
						iterErr = err
					}
					return
				}
				// A terminal error (consumer or stream deleted) is followed
				// by ErrMsgIteratorClosed: keep it as the reason.
				c.log.Warn("pull consumer", "err", err)
				iterErr = err
				continue
			}
			c.progress()
			select {
			case msgs <- msg:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		c.watchPending(ctx, cons)
	}()
	c.log.Info("consuming", "stream", event.UsageStream, "durable", c.cfg.Durable)
	c.progress()
	c.consuming.Store(true)
	defer c.consuming.Store(false)
	if err := c.loop(ctx, msgs); err != nil || ctx.Err() != nil {
		return err
	}
	// The iterator ended by itself: the consumer or the stream was deleted,
	// or the connection closed. Stopping quietly would leave the daemon up
	// with nothing ingested; the unfinished batch stays unacked.
	c.healthy.Store(false)
	c.m.healthy.Set(0)
	return fmt.Errorf("consume %s: consumer %s stopped: %w", event.UsageStream, c.cfg.Durable, iterErr)
}

func (c *Collector) loop(ctx context.Context, msgs <-chan jetstream.Msg) error {
	b := newBatch(c.cfg.BatchMaxRows)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg, ok := <-msgs:
			if !ok {
				return nil
			}
			if len(b.msgs) == 0 {
				timer.Reset(c.cfg.BatchMaxWait)
			}
			c.add(b, msg)
			if len(b.msgs) < c.cfg.BatchMaxRows {
				continue
			}
			timer.Stop()
		case <-timer.C:
		}
		if err := c.flush(ctx, b); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		b.reset()
	}
}

// watchPending reports the consumer's backlog every few seconds.
func (c *Collector) watchPending(ctx context.Context, cons jetstream.Consumer) {
	t := time.NewTicker(c.pendingEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			info, err := cons.Info(qctx)
			cancel()
			if err == nil {
				n := int64(info.NumPending) + int64(info.NumAckPending)
				c.pendingMsgs.Store(n)
				c.m.pending.Set(float64(n))
			}
		}
	}
}

// noteFreshConsumer handles a durable consumer that does not exist (first
// start, or deleted by an operator): the new one delivers the whole retained
// stream, which ClickHouse may already hold, so every message up to the
// stream's current last sequence is checked against ClickHouse like a
// redelivery.
func (c *Collector) noteFreshConsumer(ctx context.Context) error {
	_, err := c.js.Consumer(ctx, event.UsageStream, c.cfg.Durable)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("look up consumer %s: %w", c.cfg.Durable, err)
	}
	s, err := c.js.Stream(ctx, event.UsageStream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", event.UsageStream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", event.UsageStream, err)
	}
	c.verifyUpTo = info.State.LastSeq
	if c.verifyUpTo > 0 {
		c.log.Info("new consumer: checking the retained stream against ClickHouse before storing", "count", info.State.Msgs)
	}
	return nil
}

// Close releases nothing: Run owns the consumer and stops when its context
// ends, leaving an unfinished batch unacked. Close is there for the stage
// lifecycle and is safe to call any number of times.
func (c *Collector) Close() error { return nil }

// dlqMessage builds the dead-letter message for an invalid one.
func dlqMessage(msg jetstream.Msg, verr *event.ValidationError) *nats.Msg {
	out := nats.NewMsg(event.DLQSubject(verr.Reason))
	out.Data = msg.Data()
	out.Header.Set(event.HeaderReason, verr.Error())
	out.Header.Set(event.HeaderSubject, msg.Subject())
	if id := msg.Headers().Get(event.HeaderMsgID); id != "" {
		out.Header.Set(event.HeaderOriginalMsgID, id)
	}
	if md, err := msg.Metadata(); err == nil {
		out.Header.Set(event.HeaderMsgID, event.DLQMsgID(md.Stream, md.Sequence.Stream))
	}
	return out
}
