package emit

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
)

// Overflow policies.
const (
	Block = "block" // Emit waits for room, up to its context
	Drop  = "drop"  // Emit returns ErrBufferFull at once
)

// Errors Emit returns.
var (
	ErrBufferFull = errors.New("emit: buffer full, event dropped")
	ErrClosed     = errors.New("emit: emitter closed")
)

// Config tunes an Emitter.
type Config struct {
	// BufferSize bounds events accepted but not yet confirmed. Default 100000.
	BufferSize int
	// Overflow is Block or Drop. Default Block.
	Overflow string
	// MaxInFlight bounds async publishes awaiting an ack. Default 4096.
	MaxInFlight int
	// AckTimeout is how long to wait for JetStream's ack before retrying. Default 5s.
	AckTimeout time.Duration
	// RetryWait is the pause before a failed event is sent again. Default 250ms.
	RetryWait time.Duration
	// Service fills Event.Service when empty. Default none.
	Service string
	// Batch is how many events one fast batch carries at most, when the
	// usage stream allows fast batch publishing (allow_batched, nats-server
	// 2.14 or later); 0 publishes with async publish only. Default 1000.
	Batch int
	// Linger is how long an open fast batch waits for the next event
	// before it is closed and confirmed; a batch is also closed 20 Lingers
	// after it opened. Default 5ms.
	Linger time.Duration
	// TenantBuffer bounds the events one tenant may hold in the buffer
	// (accepted and not yet confirmed), so one tenant's burst cannot fill
	// the buffer and hold every other tenant's Emit up. Past it, Emit for
	// that tenant alone blocks or drops, as Overflow says. 0, or a value
	// of at least BufferSize, sets no bound. Default 25000.
	TenantBuffer int
	// TenantRate is how many events per second the sender takes from one
	// tenant; a tenant above it waits its turn, its events queued in its
	// share of the buffer, and pushes back on its own Emit calls once the
	// share is full. It keeps a flooding tenant from filling the usage
	// stream faster than the collector drains it. 0 sets no rate. Default 0.
	TenantRate float64
	// TenantBurst is how many events a tenant may send at once above
	// TenantRate. 0 means a tenth of a second's worth of TenantRate (at
	// least 1), so a flood's first burst is small next to the pipeline's
	// capacity. Default 0.
	TenantBurst int
	// TenantSeries is how many tenants, those holding most events, get
	// their own series in tenantguard_emitter_tenant_buffered; the rest are
	// summed under tenant="__overflow__". Default 10.
	TenantSeries int
	// Logger receives the emitter's few log lines (which publishing path
	// it uses, and why). Default slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{BufferSize: 100000, Overflow: Block, MaxInFlight: 4096, AckTimeout: 5 * time.Second, RetryWait: 250 * time.Millisecond,
		Batch: 1000, Linger: 5 * time.Millisecond, TenantBuffer: 25000, TenantSeries: 10}
}

// Validate names every bad field by its Go path (emit.Config.BufferSize).
func (c Config) Validate() error {
	var errs []error
	if c.BufferSize <= 0 {
		errs = append(errs, errors.New("emit.Config.BufferSize: must be > 0"))
	}
	if c.Overflow != Block && c.Overflow != Drop {
		errs = append(errs, fmt.Errorf("emit.Config.Overflow: %q must be block or drop", c.Overflow))
	}
	if c.MaxInFlight <= 0 {
		errs = append(errs, errors.New("emit.Config.MaxInFlight: must be > 0"))
	}
	if c.AckTimeout <= 0 || c.RetryWait <= 0 {
		errs = append(errs, errors.New("emit.Config.AckTimeout, emit.Config.RetryWait: must be > 0"))
	}
	if c.Batch < 0 {
		errs = append(errs, errors.New("emit.Config.Batch: must be >= 0"))
	}
	if c.Batch > 0 && c.Linger <= 0 {
		errs = append(errs, errors.New("emit.Config.Linger: must be > 0 when Batch is set"))
	}
	if c.TenantBuffer < 0 {
		errs = append(errs, errors.New("emit.Config.TenantBuffer: must be >= 0"))
	}
	if !(c.TenantRate >= 0 && c.TenantRate <= 1e9) {
		errs = append(errs, errors.New("emit.Config.TenantRate: must be from 0 to 1e9 events/s"))
	}
	if c.TenantBurst < 0 {
		errs = append(errs, errors.New("emit.Config.TenantBurst: must be >= 0"))
	}
	if c.TenantSeries < 0 {
		errs = append(errs, errors.New("emit.Config.TenantSeries: must be >= 0"))
	}
	return errors.Join(errs...)
}

// Stats are the emitter's counters since New.
type Stats struct {
	Accepted  uint64 // events taken into the buffer
	Published uint64 // events JetStream confirmed
	Dropped   uint64 // events refused because the buffer was full
	Invalid   uint64 // events refused by validation
	Retries   uint64 // publish attempts that failed and were retried
	Buffered  int64  // events accepted and not yet confirmed
	LastError string // the last publish error, if any
	FastBatch bool   // publishing through fast batches now (else async publish)
	// TenantDeferrals counts the times a tenant's next event waited for
	// TenantRate to allow it.
	TenantDeferrals uint64
	// TenantFull counts Emit calls that found their tenant's share of the
	// buffer (TenantBuffer) full, and waited or dropped.
	TenantFull uint64
}

type pending struct {
	msg    *nats.Msg
	tenant *tenantQueue
	paid   bool // TenantRate was charged for it
}

// Emitter publishes events to JetStream. It is safe for concurrent use.
type Emitter struct {
	cfg   Config
	log   *slog.Logger
	nc    *nats.Conn
	js    jetstream.JetStream
	mode  mode          // owned by the sender
	fast  atomic.Bool   // mirrors mode.fast for Stats
	slots chan struct{} // one per buffered event: the buffer bound
	fair  *fairQueue    // accepted events, per tenant, taken in turn
	due   *time.Timer   // the sender's wait for a deferred tenant
	acks  chan inflight
	done  chan struct{}
	stop  context.Context // ends with done, for waits that take a context
	cut   context.CancelFunc
	wg    sync.WaitGroup

	closed                                         atomic.Bool
	emitting                                       atomic.Int64 // Emit calls past the closed check
	accepted, published, dropped, invalid, retries atomic.Uint64
	lastErr                                        atomic.Value
	idPrefix                                       string
	idSeq                                          atomic.Uint64
	closeOnce                                      sync.Once
}

type inflight struct {
	p *pending
	f jetstream.PubAckFuture
	t time.Time
}

// New starts an emitter publishing through nc.
func New(nc *nats.Conn, cfg Config) (*Emitter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(cfg.MaxInFlight),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout))
	if err != nil {
		return nil, fmt.Errorf("emit: jetstream: %w", err)
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	e := &Emitter{
		cfg: cfg, js: js, nc: nc, log: log.With("component", "emit"),
		slots:    make(chan struct{}, cfg.BufferSize),
		fair:     newFairQueue(cfg.TenantRate, tenantBurst(cfg), tenantShare(cfg)),
		due:      time.NewTimer(time.Hour),
		acks:     make(chan inflight, cfg.MaxInFlight),
		done:     make(chan struct{}),
		idPrefix: hex.EncodeToString(rnd[:]),
	}
	e.stop, e.cut = context.WithCancel(context.Background())
	e.wg.Add(2)
	go e.send()
	go e.confirm()
	return e, nil
}

func tenantShare(cfg Config) int {
	if cfg.TenantBuffer >= cfg.BufferSize {
		return 0
	}
	return cfg.TenantBuffer
}

func tenantBurst(cfg Config) int {
	if cfg.TenantBurst > 0 {
		return cfg.TenantBurst
	}
	return max(1, int(cfg.TenantRate/10))
}

// NewID returns a unique event id: a random per-process prefix, the time and
// a sequence number, so ids sort roughly by time.
func (e *Emitter) NewID() string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixMilli()))
	binary.BigEndian.PutUint64(b[8:], e.idSeq.Add(1))
	return e.idPrefix + hex.EncodeToString(b[2:])
}

// Emit validates ev, fills id, time and service when empty, and buffers it.
// It returns ErrBufferFull under the drop policy when the buffer is full
// (ErrTenantBufferFull, which wraps it, when ev's tenant holds its
// TenantBuffer share), and the context's error when blocking ran out of
// time. Under the block policy a tenant past its share waits alone: other
// tenants' calls go on.
func (e *Emitter) Emit(ctx context.Context, ev event.Event) error {
	// Close sets closed and then waits for emitting to reach 0, so a call
	// either sees closed or is queued before Close flushes.
	e.emitting.Add(1)
	defer e.emitting.Add(-1)
	if e.closed.Load() {
		return ErrClosed
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if ev.Service == "" {
		ev.Service = e.cfg.Service
	}
	if err := precheck(&ev); err != nil {
		e.invalid.Add(1)
		return err
	}
	// The tenant's share and the slot first: an event dropped because the
	// buffer is full costs no id and no encoding.
	t, err := e.fair.admit(ctx, ev.TenantID, e.cfg.Overflow == Block, e.done)
	if err != nil {
		if !errors.Is(err, ErrClosed) {
			e.dropped.Add(1)
		}
		return err
	}
	if err := e.acquire(ctx); err != nil {
		e.fair.release(t)
		return err
	}
	if ev.ID == "" {
		ev.ID = e.NewID()
	}
	data := event.AppendJSON(make([]byte, 0, 256), &ev)
	if len(data) > event.MaxSize {
		e.release(&pending{tenant: t})
		e.invalid.Add(1)
		return fmt.Errorf("emit: event is %d bytes, limit %d", len(data), event.MaxSize)
	}
	msg := nats.NewMsg(event.Subject(ev.TenantID, ev.Kind))
	msg.Data = data
	msg.Header.Set(event.HeaderMsgID, ev.ID)
	e.accepted.Add(1)
	e.fair.push(&pending{msg: msg, tenant: t}, false)
	return nil
}

// release frees a confirmed event's slot and its tenant's share.
func (e *Emitter) release(p *pending) {
	<-e.slots
	e.fair.release(p.tenant)
}

// dequeue returns the next event in the tenants' turn, waiting for one
// until idle or deadline fires (nil, true) or the emitter stops (nil,
// false). Nil channels never fire.
func (e *Emitter) dequeue(idle, deadline <-chan time.Time) (*pending, bool) {
	for {
		p, due := e.fair.pop(time.Now())
		if p != nil {
			return p, true
		}
		var dueC <-chan time.Time
		if !due.IsZero() {
			e.due.Reset(time.Until(due))
			dueC = e.due.C
		}
		select {
		case <-e.fair.wake:
		case <-dueC:
		case <-idle:
			return nil, true
		case <-deadline:
			return nil, true
		case <-e.done:
			return nil, false
		}
	}
}

// precheck refuses what the collector would dead-letter for certain, so a
// bad call fails at the caller instead of in the DLQ.
func precheck(ev *event.Event) error {
	switch {
	case len(ev.ID) > event.MaxIDLen:
		return fmt.Errorf("emit: id longer than %d bytes", event.MaxIDLen)
	case ev.ID != "" && (strings.ContainsAny(ev.ID, "\r\n") || strings.TrimSpace(ev.ID) != ev.ID):
		// The id travels as the Nats-Msg-Id header too, which cannot carry
		// line breaks or surrounding blanks: the copies would differ.
		return errors.New("emit: id must not hold line breaks or leading or trailing blanks")
	case !event.ValidTenantID(ev.TenantID):
		return fmt.Errorf("emit: tenant_id %q must match %s", ev.TenantID, event.TenantPattern)
	case !event.ValidKindName(ev.Kind):
		return fmt.Errorf("emit: kind %q must match %s", ev.Kind, event.KindPattern)
	case !(ev.Quantity >= 0 && ev.Quantity <= event.MaxQuantity):
		return fmt.Errorf("emit: quantity must be from 0 to %d", int64(event.MaxQuantity))
	case !(ev.LatencyMs >= 0 && ev.LatencyMs <= event.MaxLatencyMs):
		return fmt.Errorf("emit: latency_ms must be from 0 to %.0f", event.MaxLatencyMs)
	case ev.Time.Year() < 1 || ev.Time.Year() > 9999:
		return errors.New("emit: time must be within years 0001 to 9999")
	case len(ev.Attrs) > event.MaxAttrs:
		return fmt.Errorf("emit: at most %d attrs", event.MaxAttrs)
	}
	return nil
}

func (e *Emitter) acquire(ctx context.Context) error {
	select {
	case e.slots <- struct{}{}:
		return nil
	default:
	}
	if e.cfg.Overflow == Drop {
		e.dropped.Add(1)
		return ErrBufferFull
	}
	select {
	case e.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		e.dropped.Add(1)
		return fmt.Errorf("emit: buffer full: %w", ctx.Err())
	case <-e.done:
		return ErrClosed
	}
}

// send publishes queued events: in fast batches while the stream allows
// them, else asynchronously one by one. Events a failed batch left
// unconfirmed go first into the next batch, or the next async publishes.
func (e *Emitter) send() {
	defer e.wg.Done()
	defer close(e.acks)
	var retry []*pending
	for {
		if e.fastMode() {
			var ok bool
			if retry, ok = e.sendBatch(retry); !ok {
				return
			}
			continue
		}
		var p *pending
		if len(retry) > 0 {
			p, retry = retry[0], retry[1:]
		} else if p, _ = e.dequeue(nil, nil); p == nil {
			return
		}
		if !e.publishAsync(p) {
			return
		}
	}
}

// publishAsync publishes p and hands its ack future to confirm, retrying
// until the publish is out. It returns false when the emitter stops.
func (e *Emitter) publishAsync(p *pending) bool {
	p.msg.Reply = "" // a fast batch may have set it
	for {
		f, err := e.js.PublishMsgAsync(p.msg)
		if err == nil {
			select {
			case e.acks <- inflight{p: p, f: f, t: time.Now()}:
				return true
			case <-e.done:
				return false
			}
		}
		e.fail(err)
		select {
		case <-e.done:
			return false
		case <-time.After(e.cfg.RetryWait):
		}
	}
}

// confirm waits for acks in publish order and re-queues failures.
func (e *Emitter) confirm() {
	defer e.wg.Done()
	for in := range e.acks {
		select {
		case <-in.f.Ok():
			e.published.Add(1)
			e.release(in.p)
		case err := <-in.f.Err():
			e.fail(err)
			go e.requeue(in.p)
		case <-e.done:
			return
		}
	}
}

// requeue sends a failed event again after RetryWait, first in its
// tenant's queue. The event keeps its slot and its share.
func (e *Emitter) requeue(p *pending) {
	select {
	case <-time.After(e.cfg.RetryWait):
	case <-e.done:
		return
	}
	e.fair.push(p, true)
}

func (e *Emitter) fail(err error) { e.failN(err, 1) }

// failN records a failure that sends n events again.
func (e *Emitter) failN(err error, n int) {
	e.retries.Add(uint64(n))
	e.lastErr.Store(err.Error())
}

// Stats returns the counters.
func (e *Emitter) Stats() Stats {
	s := Stats{
		Accepted: e.accepted.Load(), Published: e.published.Load(), Dropped: e.dropped.Load(),
		Invalid: e.invalid.Load(), Retries: e.retries.Load(), Buffered: int64(len(e.slots)),
		FastBatch: e.fast.Load(),
	}
	s.TenantDeferrals, s.TenantFull = e.fair.counters()
	if v, ok := e.lastErr.Load().(string); ok {
		s.LastError = v
	}
	return s
}

// Flush waits until every accepted event is confirmed, or ctx ends; then it
// returns how many are still unconfirmed.
func (e *Emitter) Flush(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for len(e.slots) > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("emit: flush: %d events unconfirmed: %w", len(e.slots), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Close stops accepting events, flushes until ctx ends and stops the sender.
// Events still unconfirmed then are reported in the error, never hidden.
func (e *Emitter) Close(ctx context.Context) error {
	var err error
	e.closeOnce.Do(func() {
		e.closed.Store(true)
		// Let calls already past the closed check queue their event, so
		// Flush covers it. One blocked on a full buffer gets a slot as
		// the sender drains it, or ErrClosed once ctx ends and done closes.
		for e.emitting.Load() > 0 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		err = e.Flush(ctx)
		close(e.done)
		e.cut()
		e.wg.Wait()
	})
	return err
}
