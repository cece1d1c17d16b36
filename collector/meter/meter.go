package meter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/limiter"
)

// Config configures a Meter. Zero values are not defaults: start from
// DefaultConfig.
type Config struct {
	// Service fills each event's service field when the emitter does not.
	// Default empty.
	Service string
	// Meter turns metering on: every request, outbound call and query
	// becomes a usage event. It is off as well without Deps.Emitter.
	// Default true.
	Meter bool
	// Guard turns the limiter on: throttled and shed tenants get 429,
	// open circuits 503 or a fail-fast error. It is off as well without
	// Deps.Limiter. Default true.
	Guard bool
	// QueueSize bounds the records waiting to be handed to the emitter.
	// When it is full, records are dropped and counted; requests never
	// wait. Default 4096.
	QueueSize int
	// FlushInterval is how often queued records are handed to the
	// emitter; a queue half full is handed over at once. Default 10ms.
	FlushInterval time.Duration
	// HTTP configures Handler.
	HTTP HTTPConfig
	// Outbound configures Transport.
	Outbound OutboundConfig
}

// HTTPConfig configures the HTTP middleware.
type HTTPConfig struct {
	// Tenant extracts the tenant of a request, as the limiter middleware
	// does: limiter.HeaderTenant, limiter.JWTClaimTenant or a func of your
	// own. An error answers 401. Default nil: the tenant a middleware
	// before this one put into the request's context (event.WithIdentity).
	Tenant limiter.TenantFunc
	// User extracts the end user, or ""; values over 256 bytes are left
	// out. Default nil: the user in the request's context, if it names
	// the same tenant.
	User func(r *http.Request) string
	// Route names the request's route template for events and
	// route-scoped decisions. Default nil: the http.ServeMux pattern
	// (r.Pattern), looked up before serving only when a route-scoped
	// decision needs it. Never the raw path, so cardinality stays bounded.
	Route func(r *http.Request) string
	// Integration names the integration a request depends on; while its
	// circuit is open for the tenant the request gets 503, and responses
	// >= 500 count as its failures. Default nil: no integration.
	Integration func(r *http.Request) string
	// AllowAnonymous passes requests without a tenant (limiter.ErrNoTenant)
	// through, unmetered and unguarded, instead of answering 401. Default
	// false.
	AllowAnonymous bool
	// Kind of the request events. Default api_request.
	Kind string
}

// OutboundConfig configures Transport.
type OutboundConfig struct {
	// Kind of the outbound call events. Default webhook_call.
	Kind string
	// Failed reports whether a call failed, for its circuit breaker and
	// its event's error flag. Default nil: a transport error or a status
	// >= 500. A call the caller cancelled never counts against the breaker.
	Failed func(resp *http.Response, err error) bool
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Meter: true, Guard: true, QueueSize: 4096, FlushInterval: 10 * time.Millisecond,
		HTTP:     HTTPConfig{Kind: event.KindAPIRequest},
		Outbound: OutboundConfig{Kind: event.KindWebhookCall},
	}
}

// Validate names every bad field by its Go path (meter.Config.QueueSize).
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("meter.Config.%s: "+format, append([]any{field}, args...)...))
	}
	if len(c.Service) > 256 {
		bad("Service", "longer than 256 bytes")
	}
	if c.QueueSize <= 0 || c.QueueSize > 1<<20 {
		bad("QueueSize", "must be in 1..%d", 1<<20)
	}
	if c.FlushInterval <= 0 {
		bad("FlushInterval", "must be > 0")
	}
	if !event.ValidKindName(c.HTTP.Kind) {
		bad("HTTP.Kind", "%q must match %s", c.HTTP.Kind, event.KindPattern)
	}
	if !event.ValidKindName(c.Outbound.Kind) {
		bad("Outbound.Kind", "%q must match %s", c.Outbound.Kind, event.KindPattern)
	}
	return errors.Join(errs...)
}

// Emitter takes usage events; *emit.Emitter is one.
type Emitter interface {
	Emit(ctx context.Context, ev event.Event) error
}

var _ Emitter = (*emit.Emitter)(nil)

// Deps are what a Meter works with. All are optional.
type Deps struct {
	// Emitter publishes the events; nil turns metering off.
	Emitter Emitter
	// Limiter guards requests and calls; nil turns guarding off.
	Limiter *limiter.Limiter
	// Registerer receives the meter's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Meter meters and guards a service's requests, outbound calls and
// queries. It is safe for concurrent use.
type Meter struct {
	cfg   Config
	em    Emitter
	lim   *limiter.Limiter
	log   *slog.Logger
	meter bool
	guard bool

	q       chan Record
	kick    chan struct{}
	flushC  chan chan struct{}
	stop    chan struct{}
	stopped chan struct{}
	runCtx  context.Context
	cancel  context.CancelFunc

	closed    atomic.Bool
	inflight  atomic.Int64 // Record calls past the closed check
	closeOnce sync.Once
	closeErr  error

	stats stats
}

// New starts a Meter. Close it before the emitter.
func New(cfg Config, deps Deps) (*Meter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	m := &Meter{
		cfg: cfg, em: deps.Emitter, lim: deps.Limiter,
		log:     deps.Logger.With("component", "meter"),
		meter:   cfg.Meter && deps.Emitter != nil,
		guard:   cfg.Guard && deps.Limiter != nil,
		q:       make(chan Record, cfg.QueueSize),
		kick:    make(chan struct{}, 1),
		flushC:  make(chan chan struct{}),
		stop:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	m.runCtx, m.cancel = context.WithCancel(context.Background())
	if deps.Registerer != nil {
		if err := deps.Registerer.Register(newCollector(m)); err != nil {
			return nil, fmt.Errorf("meter: metrics: %w", err)
		}
	}
	go m.run()
	return m, nil
}

// Metering reports whether operations become events.
func (m *Meter) Metering() bool { return m.meter }

// Guarding reports whether the limiter is applied.
func (m *Meter) Guarding() bool { return m.guard }

// Limiter returns the limiter the Meter guards with, or nil.
func (m *Meter) Limiter() *limiter.Limiter {
	if !m.guard {
		return nil
	}
	return m.lim
}

// MaxAttrs is how many attributes a Record carries.
const MaxAttrs = 4

// Record is one metered operation. It is a fixed-size value: queueing it
// allocates nothing, and the Meter's goroutine turns it into an event.
type Record struct {
	Kind     string
	Identity event.Identity
	Route    string
	Time     time.Time     // when the operation started
	Latency  time.Duration // how long it took
	Quantity float64       // 0 means 1
	Status   int
	Error    bool
	attrs    [MaxAttrs]Attr
	nattrs   uint8
}

// Add appends an attribute; beyond MaxAttrs it is ignored.
func (r *Record) Add(a Attr) {
	if int(r.nattrs) < MaxAttrs {
		r.attrs[r.nattrs] = a
		r.nattrs++
	}
}

// Attr is one event attribute whose value is rendered off the caller's
// path: a string, a decimal or a hexadecimal integer.
type Attr struct {
	Key  string
	str  string
	num  uint64
	form byte // 's', 'd' (int64 in num) or 'x'
}

// String is an attribute with a string value.
func String(key, value string) Attr { return Attr{Key: key, str: value, form: 's'} }

// Int is an attribute with a decimal integer value.
func Int(key string, n int64) Attr { return Attr{Key: key, num: uint64(n), form: 'd'} }

// Hex is an attribute with a hexadecimal value, zero-padded to 16 digits.
func Hex(key string, n uint64) Attr { return Attr{Key: key, num: n, form: 'x'} }

func (a Attr) value() string {
	switch a.form {
	case 'd':
		return strconv.FormatInt(int64(a.num), 10)
	case 'x':
		var b [16]byte
		s := strconv.AppendUint(b[:0], a.num, 16)
		pad := [16]byte{'0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0'}
		return string(append(pad[:16-len(s)], s...))
	}
	return a.str
}

// Record queues r to become an event and reports whether it was queued.
// It never blocks: when the queue is full, or the Meter is closed, r is
// dropped and counted. A record without a tenant is not metered; it is
// counted in tenantguard_meter_untenanted_total.
func (m *Meter) Record(r *Record) bool {
	if !m.meter {
		return false
	}
	if r.Identity.Tenant == "" {
		m.stats.untenanted(r.Kind).Add(1)
		return false
	}
	m.inflight.Add(1)
	defer m.inflight.Add(-1)
	if m.closed.Load() {
		m.stats.dropped[dropClosed].Add(1)
		return false
	}
	select {
	case m.q <- *r:
	default:
		m.stats.dropped[dropQueueFull].Add(1)
		return false
	}
	if len(m.q) >= cap(m.q)/2 {
		select {
		case m.kick <- struct{}{}:
		default:
		}
	}
	return true
}

// run hands the queue to the emitter every FlushInterval, when kicked and
// on Flush, until Close.
func (m *Meter) run() {
	defer close(m.stopped)
	t := time.NewTicker(m.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.drain(m.runCtx)
		case <-m.kick:
			m.drain(m.runCtx)
		case ack := <-m.flushC:
			m.drain(m.runCtx)
			close(ack)
		}
	}
}

// drain emits what is queued now.
func (m *Meter) drain(ctx context.Context) {
	for n := len(m.q); n > 0; n-- {
		r := <-m.q
		m.emit(ctx, &r)
	}
}

func (m *Meter) emit(ctx context.Context, r *Record) {
	ev := event.Event{
		TenantID: r.Identity.Tenant, UserID: r.Identity.User, Kind: r.Kind, Time: r.Time,
		Quantity: r.Quantity, Service: m.cfg.Service, Route: r.Route,
		LatencyMs: float64(r.Latency) / float64(time.Millisecond), StatusCode: r.Status, Error: r.Error,
	}
	if ev.Quantity == 0 {
		ev.Quantity = 1
	}
	if r.nattrs > 0 {
		ev.Attrs = make(map[string]string, r.nattrs)
		for _, a := range r.attrs[:r.nattrs] {
			ev.Attrs[a.Key] = a.value()
		}
	}
	err := m.em.Emit(ctx, ev)
	if err == nil {
		m.stats.emitted.Add(1)
		return
	}
	reason := dropEmitInvalid
	switch {
	case errors.Is(err, emit.ErrBufferFull):
		reason = dropEmitFull
	case errors.Is(err, emit.ErrClosed), ctx.Err() != nil:
		reason = dropEmitClosed
	}
	m.stats.dropped[reason].Add(1)
	m.stats.logDrop(m.log, reason, r.Identity.Tenant, err)
}

// Flush hands every record queued so far to the emitter, or returns
// ctx's error. It does not wait for the emitter to publish; see
// emit.Emitter.Flush.
func (m *Meter) Flush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case m.flushC <- ack:
	case <-m.stopped:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("meter: flush: %w", ctx.Err())
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("meter: flush: %w", ctx.Err())
	}
}

// Close stops taking records, hands what is queued to the emitter (for as
// long as ctx allows) and stops the goroutine. Records it could not hand
// over are counted as dropped and reported in the error. Idempotent.
func (m *Meter) Close(ctx context.Context) error {
	m.closeOnce.Do(func() {
		m.closed.Store(true)
		// A Record past the closed check either queues before the final
		// drain or has already been counted.
		for m.inflight.Load() > 0 && ctx.Err() == nil {
			time.Sleep(100 * time.Microsecond)
		}
		release := context.AfterFunc(ctx, m.cancel) // unblock an Emit waiting on a full emitter
		defer release()
		close(m.stop)
		<-m.stopped
		m.drain(ctx)
		m.cancel()
		if n := len(m.q); n > 0 {
			m.stats.dropped[dropClosed].Add(uint64(n))
			m.closeErr = fmt.Errorf("meter: close: %d records not handed to the emitter", n)
		}
	})
	return m.closeErr
}
