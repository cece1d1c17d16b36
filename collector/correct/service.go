package correct

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/provision"
)

// Observer sees the effect of each applied correction once, after it is
// stored: the exporter's metrics count it, the detector's spend tracking
// nets it out. It must not block.
type Observer interface {
	ObserveCorrection(e *event.CorrectionEffect)
}

// ServiceConfig tunes the daemon's correction consumer.
type ServiceConfig struct {
	// Durable is the consumer's name, shared by every replica. Default
	// "tenantguard-corrections".
	Durable string
	// AckWait is how long JetStream waits before it delivers a request
	// again. Default 30s.
	AckWait time.Duration
	// MaxAge drops requests no daemon applied for this long. Default 720h.
	MaxAge time.Duration
	// Replicas of the stream in a NATS cluster (collector.stream.replicas).
	// Default 1.
	Replicas int
	// RetryMin and RetryMax bound the backoff while ClickHouse fails.
	// Defaults 200ms and 10s.
	RetryMin, RetryMax time.Duration
}

// DefaultServiceConfig returns the defaults documented on ServiceConfig.
func DefaultServiceConfig() ServiceConfig {
	return ServiceConfig{
		Durable: "tenantguard-corrections", AckWait: 30 * time.Second, MaxAge: 30 * 24 * time.Hour,
		Replicas: 1, RetryMin: 200 * time.Millisecond, RetryMax: 10 * time.Second,
	}
}

// Validate names every bad field.
func (c ServiceConfig) Validate() error {
	var errs []error
	if !event.ValidTenantID(c.Durable) {
		errs = append(errs, errors.New("corrections durable: must be a name of letters, digits, '-' or '_'"))
	}
	if c.AckWait < time.Second {
		errs = append(errs, errors.New("corrections ack_wait: must be >= 1s"))
	}
	if c.MaxAge < 0 {
		errs = append(errs, errors.New("corrections max_age: must be >= 0"))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, errors.New("collector.stream.replicas: must be 1 to 5"))
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, errors.New("corrections retry_min: must be > 0 and <= retry_max"))
	}
	return errors.Join(errs...)
}

// ServiceDeps are the Service's collaborators.
type ServiceDeps struct {
	JetStream jetstream.JetStream // required
	Applier   *Applier            // required
	Observers []Observer
	Registry  prometheus.Registerer // default: a private registry
	Logger    *slog.Logger          // default: slog.Default()
}

// Service applies correction requests published on
// tenantguard.corrections.<tenant_id>. Every replica binds the same durable
// consumer, which has one request in flight at a time, so corrections are
// applied in order, one after the other, across the whole deployment.
type Service struct {
	cfg       ServiceConfig
	js        jetstream.JetStream
	applier   *Applier
	observers []Observer
	log       *slog.Logger
	m         *serviceMetrics
	closeOnce sync.Once
}

// NewService checks cfg and builds the Service; Run starts it.
func NewService(cfg ServiceConfig, d ServiceDeps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.JetStream == nil || d.Applier == nil {
		return nil, errors.New("correct: JetStream and Applier are required")
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	m, err := newServiceMetrics(d.Registry)
	if err != nil {
		return nil, fmt.Errorf("corrections metrics: %w", err)
	}
	return &Service{cfg: cfg, js: d.JetStream, applier: d.Applier, observers: d.Observers,
		log: d.Logger.With("component", "corrections"), m: m}, nil
}

// StreamConfig is the JetStream config of TENANTGUARD_CORRECTIONS.
func StreamConfig(cfg ServiceConfig) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        event.CorrectionsStream,
		Description: "tenantguard correction requests, applied one at a time by the daemon",
		Subjects:    []string{event.CorrectionsSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.WorkQueuePolicy,
		MaxAge:      cfg.MaxAge,
		MaxMsgSize:  event.MaxCorrectionRequestSize,
		Replicas:    cfg.Replicas,
		Duplicates:  2 * time.Minute,
	}
}

// ProvisionStream creates or updates TENANTGUARD_CORRECTIONS, never
// lowering an existing stream's replica count; kept is not nil when it
// kept more replicas than cfg asks for. Only the daemon (and migrate)
// call it; publishers never change streams.
func ProvisionStream(ctx context.Context, js jetstream.JetStream, cfg ServiceConfig) (kept *provision.Kept, err error) {
	return provision.Stream(ctx, js, StreamConfig(cfg))
}

// EnsureStream is ProvisionStream for callers that need not know what was
// kept.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg ServiceConfig) error {
	_, err := ProvisionStream(ctx, js, cfg)
	return err
}

// Run consumes requests until ctx ends; it returns nil on cancel. A request
// that could not be applied (ClickHouse down) is retried with backoff and
// never acked before it is applied.
func (s *Service) Run(ctx context.Context) error {
	var cons jetstream.Consumer
	if err := s.retry(ctx, "create consumer", func() error {
		if err := EnsureStream(ctx, s.js, s.cfg); err != nil {
			return err
		}
		var err error
		cons, err = s.js.CreateOrUpdateConsumer(ctx, event.CorrectionsStream, jetstream.ConsumerConfig{
			Durable:       s.cfg.Durable,
			Description:   "tenantguard corrections",
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       s.cfg.AckWait,
			MaxAckPending: 1, // one request at a time, deployment-wide
			MaxDeliver:    -1,
		})
		return err
	}); err != nil {
		return nil // ctx ended
	}
	s.log.Info("consuming", "stream", event.CorrectionsStream, "durable", s.cfg.Durable)
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		msg, err := cons.Next(jetstream.FetchContext(fctx))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
				s.log.Warn("fetch correction request", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(s.cfg.RetryMin):
				}
			}
			continue
		}
		s.handle(ctx, msg)
	}
	return nil
}

// Close releases nothing: Run owns the consumer. It is idempotent.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {})
	return nil
}

// handle applies one request, replies and acks it. On ctx end it returns
// without an ack: the request is delivered again.
func (s *Service) handle(ctx context.Context, msg jetstream.Msg) {
	reply := s.decide(ctx, msg)
	if ctx.Err() != nil {
		return
	}
	if to := msg.Headers().Get(event.HeaderReply); to != "" {
		if !event.ValidReplySubject(to) {
			// Publishing where a requester asks, with the daemon's
			// rights, must never reach a stream or the JetStream API.
			s.log.Warn("correction reply subject refused: not under _INBOX.", "tenant", msg.Subject())
		} else if b, err := json.Marshal(reply); err == nil {
			// The requester may be gone: the outcome is stored either way.
			_ = s.js.Conn().Publish(to, b)
		}
	}
	if err := msg.Ack(); err != nil {
		s.log.Warn("ack correction request", "err", err)
	}
}

func (s *Service) decide(ctx context.Context, msg jetstream.Msg) event.CorrectionReply {
	tenant, ok := event.ParseCorrectionSubject(msg.Subject())
	if !ok {
		return s.badRequest(fmt.Sprintf("subject %q must be tenantguard.corrections.<tenant_id>", clip(msg.Subject())))
	}
	req, err := DecodeRequest(msg.Data())
	if err != nil {
		return s.badRequest(err.Error())
	}
	var out Outcome
	start := time.Now()
	if err := s.retry(ctx, "apply corrections", func() error {
		var err error
		out, err = s.applier.Apply(ctx, tenant, req.Corrections)
		if err != nil {
			_ = msg.InProgress()
		}
		return err
	}); err != nil {
		return event.CorrectionReply{} // ctx ended; not acked
	}
	for i := range out.Effects {
		for _, o := range s.observers {
			o.ObserveCorrection(&out.Effects[i])
		}
	}
	for _, r := range out.Results {
		s.m.results.WithLabelValues(r.Status).Inc()
		if r.Status == event.CorrectionRefused {
			s.m.refused.WithLabelValues(string(r.Reason)).Inc()
			s.log.Info("correction refused", "tenant", tenant, "id", r.ID, "event_id", r.EventID, "err", r.Error)
		}
	}
	s.log.Info("corrections handled", "tenant", tenant, "count", len(out.Results), "applied", len(out.Effects),
		"refused", out.Refused(), "duration", time.Since(start))
	return event.CorrectionReply{Results: out.Results}
}

func (s *Service) badRequest(msg string) event.CorrectionReply {
	s.m.refused.WithLabelValues("invalid_request").Inc()
	s.log.Warn("correction request refused", "err", msg)
	return event.CorrectionReply{Error: msg}
}

// DecodeRequest reads a correction request body, bounded in size and count.
func DecodeRequest(data []byte) (event.CorrectionRequest, error) {
	var req event.CorrectionRequest
	if len(data) > event.MaxCorrectionRequestSize {
		return req, fmt.Errorf("request is %d bytes, limit %d", len(data), event.MaxCorrectionRequestSize)
	}
	if err := json.Unmarshal(data, &req); err != nil {
		return req, fmt.Errorf("request is not a JSON correction request: %v", err)
	}
	if n := len(req.Corrections); n == 0 || n > event.MaxCorrectionsPerRequest {
		return req, fmt.Errorf("request must hold 1 to %d corrections, got %d", event.MaxCorrectionsPerRequest, n)
	}
	return req, nil
}

// retry runs fn until it succeeds or ctx ends, backing off between failures.
func (s *Service) retry(ctx context.Context, what string, fn func() error) error {
	wait := s.cfg.RetryMin
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			if attempt > 1 {
				s.log.Info(what+" recovered", "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.m.errors.Inc()
		s.log.Warn(what+" failed; retrying", "err", err, "attempt", attempt, "backoff", wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait + rand.N(wait/4+1)):
		}
		wait = min(wait*2, s.cfg.RetryMax)
	}
}

// serviceMetrics are the Service's self-metrics.
type serviceMetrics struct {
	results *prometheus.CounterVec // status
	refused *prometheus.CounterVec // reason
	errors  prometheus.Counter
}

func newServiceMetrics(reg prometheus.Registerer) (*serviceMetrics, error) {
	m := &serviceMetrics{
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_corrections_total",
			Help: "Corrections the daemon handled, by status: applied, duplicate (its id was applied before) or refused.",
		}, []string{"status"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_corrections_refused_total",
			Help: "Corrections refused, by reason (unknown_event, already_voided, too_late, ...; invalid_request for a whole request).",
		}, []string{"reason"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenantguard_corrections_errors_total",
			Help: "Failed attempts to apply a correction request (ClickHouse errors), retried with backoff.",
		}),
	}
	for _, c := range []prometheus.Collector{m.results, m.refused, m.errors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, st := range []string{event.CorrectionApplied, event.CorrectionDuplicate, event.CorrectionRefused} {
		m.results.WithLabelValues(st)
	}
	return m, nil
}
