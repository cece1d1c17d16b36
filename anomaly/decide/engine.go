package decide

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/limiter"
)

// Publisher writes decisions to the KV bucket; *limiter.Publisher is one.
type Publisher interface {
	Put(ctx context.Context, d limiter.Decision) (uint64, error)
	Clear(ctx context.Context, tenant, scope string, source limiter.Source) error
}

// Sweeper deletes expired decisions; *limiter.Publisher is one. Optional.
type Sweeper interface {
	Sweep(ctx context.Context) (int, error)
}

// Recorder keeps the audit trail; *ClickHouseRecorder is one.
type Recorder interface {
	Record(ctx context.Context, ds []limiter.Decision) error
}

var (
	_ Publisher    = (*limiter.Publisher)(nil)
	_ Sweeper      = (*limiter.Publisher)(nil)
	_ Recorder     = (*ClickHouseRecorder)(nil)
	_ anomaly.Sink = (*Engine)(nil)
)

// Deps are the engine's clients. Publisher is required.
type Deps struct {
	Publisher  Publisher
	Recorder   Recorder              // nil: no audit trail
	Registerer prometheus.Registerer // nil: no metrics
	Logger     *slog.Logger
	Now        func() time.Time // nil: time.Now
}

// Engine turns alerts into decisions; see the package doc.
type Engine struct {
	cfg   Config
	deps  Deps
	log   *slog.Logger
	now   func() time.Time
	queue chan anomaly.Alert

	mu      sync.Mutex
	active  map[string]*condition // by decision key
	activeN atomic.Int64          // len(active), for the gauge: a scrape never waits on mu

	// late holds resolutions the full queue could not take, by
	// fingerprint: dropping one would renew its throttle forever, since
	// the detector sends each resolution once. Run applies them.
	lateMu sync.Mutex
	late   map[string]anomaly.Alert

	decisions  *prometheus.CounterVec
	suppressed prometheus.Counter
	failures   *prometheus.CounterVec
	dropped    prometheus.Counter
	activeG    prometheus.GaugeFunc

	closeOnce sync.Once
	closed    chan struct{}
}

// condition is one decision key held by one or more firing alerts.
type condition struct {
	alerts     map[string]anomaly.Alert // by fingerprint
	current    limiter.Decision         // last decision published (zero if none yet)
	pending    bool                     // the last publish failed or was suppressed
	suppressed bool                     // a manual decision outranks it (logged once)
}

// New returns an engine.
func New(cfg Config, deps Deps) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Publisher == nil {
		return nil, errors.New("decide: Deps.Publisher is required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	e := &Engine{
		cfg: cfg, deps: deps, now: deps.Now,
		log:    deps.Logger.With("component", "decide"),
		queue:  make(chan anomaly.Alert, cfg.QueueSize),
		active: map[string]*condition{},
		late:   map[string]anomaly.Alert{},
		closed: make(chan struct{}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_decisions_total",
			Help: "Decisions issued by the engine (including renewals and clears), by action and source.",
		}, []string{"action", "source"}),
		suppressed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenantguard_decisions_suppressed_total",
			Help: "Automatic decisions not written because a live manual decision outranks them.",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_decisions_errors_total",
			Help: "Failures to publish or record a decision, by stage.",
		}, []string{"stage"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenantguard_decisions_alerts_dropped_total",
			Help: "Alerts dropped because the engine's queue was full.",
		}),
	}
	e.activeG = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tenantguard_decisions_active",
		Help: "Decision keys the engine currently holds and renews.",
	}, func() float64 { return float64(e.activeN.Load()) })
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{e.decisions, e.suppressed, e.failures, e.dropped, e.activeG} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
		}
	}
	return e, nil
}

// Send queues an alert for Run; it never blocks (anomaly.Sink). When the
// queue is full a firing alert is dropped and counted; a resolution is kept
// aside (one per fingerprint) and applied on Run's next tick.
func (e *Engine) Send(_ context.Context, a anomaly.Alert) {
	select {
	case e.queue <- a:
	default:
		if a.Status == anomaly.StatusResolved {
			e.lateMu.Lock()
			e.late[a.Fingerprint] = a
			e.lateMu.Unlock()
			return
		}
		e.dropped.Inc()
		e.log.Warn("alert queue full; alert dropped", "tenant", a.TenantID)
	}
}

// handleLate applies the resolutions Send kept aside.
func (e *Engine) handleLate(ctx context.Context) {
	e.lateMu.Lock()
	if len(e.late) == 0 {
		e.lateMu.Unlock()
		return
	}
	late := e.late
	e.late = map[string]anomaly.Alert{}
	e.lateMu.Unlock()
	for _, a := range late {
		if err := e.Handle(ctx, a); err != nil {
			e.log.Warn("resolution not applied", "tenant", a.TenantID, "err", err)
		}
	}
}

// Run handles queued alerts, renews live decisions and sweeps expired ones
// until ctx ends or Close; it returns nil then.
func (e *Engine) Run(ctx context.Context) error {
	tick := time.NewTicker(min(e.cfg.RenewEvery/4, time.Second))
	defer tick.Stop()
	sweep := time.NewTicker(e.cfg.SweepEvery)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-e.closed:
			return nil
		case a := <-e.queue:
			if err := e.Handle(ctx, a); err != nil {
				e.log.Warn("alert not turned into a decision", "tenant", a.TenantID, "err", err)
			}
		case <-tick.C:
			e.handleLate(ctx)
			e.Renew(ctx)
		case <-sweep.C:
			if s, ok := e.deps.Publisher.(Sweeper); ok {
				if n, err := s.Sweep(ctx); err != nil {
					e.log.Warn("sweep expired decisions", "err", err)
				} else if n > 0 {
					e.log.Info("swept expired decisions", "count", n)
				}
			}
		}
	}
}

// Close stops Run; it is idempotent.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() { close(e.closed) })
	return nil
}

// Active returns the decisions the engine holds, for tests and status.
func (e *Engine) Active() []limiter.Decision {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]limiter.Decision, 0, len(e.active))
	for _, c := range e.active {
		if c.current.TenantID != "" {
			out = append(out, c.current)
		}
	}
	return out
}

// Handle applies one alert now. Alerts no policy acts on are ignored.
func (e *Engine) Handle(ctx context.Context, a anomaly.Alert) error {
	want, ok := e.policy(a)
	if !ok {
		return nil
	}
	key, err := limiter.Key(want.TenantID, want.Scope)
	if err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	// mu is held across NATS and ClickHouse calls; the gauge reads a copy.
	defer func() { e.activeN.Store(int64(len(e.active))) }()
	c := e.active[key]
	if a.Status == anomaly.StatusResolved {
		if c == nil {
			return nil
		}
		delete(c.alerts, a.Fingerprint)
		if len(c.alerts) > 0 {
			return e.publishLocked(ctx, c, false)
		}
		delete(e.active, key)
		return e.clearLocked(ctx, c, want, a)
	}
	if c == nil {
		c = &condition{alerts: map[string]anomaly.Alert{}}
		e.active[key] = c
	}
	c.alerts[a.Fingerprint] = a
	return e.publishLocked(ctx, c, false)
}

// Renew re-publishes every held decision that is due (older than
// RenewEvery) or that failed or was suppressed last time.
func (e *Engine) Renew(ctx context.Context) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	for _, c := range e.active {
		if c.pending || now.Sub(c.current.IssuedAt) >= e.cfg.RenewEvery {
			if err := e.publishLocked(ctx, c, true); err != nil && !errors.Is(err, limiter.ErrManualOverride) {
				e.log.Warn("renew decision", "tenant", c.current.TenantID, "err", err)
			}
		}
	}
}

// publishLocked publishes the most restrictive decision the condition's
// alerts call for, when it differs from the current one or renew is set.
func (e *Engine) publishLocked(ctx context.Context, c *condition, renew bool) error {
	var best limiter.Decision
	for _, a := range c.alerts {
		d, ok := e.policy(a)
		if !ok {
			continue
		}
		if best.TenantID == "" || d.RatePerSec < best.RatePerSec ||
			(d.RatePerSec == best.RatePerSec && d.AnomalyID < best.AnomalyID) {
			best = d
		}
	}
	if best.TenantID == "" {
		return nil
	}
	same := c.current.TenantID != "" && c.current.Action == best.Action &&
		c.current.RatePerSec == best.RatePerSec && c.current.Burst == best.Burst
	if same && !renew && !c.pending {
		return nil
	}
	now := e.now().UTC().Truncate(time.Second)
	best.IssuedAt, best.ExpiresAt = now, now.Add(e.cfg.TTL)
	if _, err := e.deps.Publisher.Put(ctx, best); err != nil {
		if errors.Is(err, limiter.ErrManualOverride) {
			e.suppressed.Inc()
			if !c.suppressed {
				e.log.Info("manual decision outranks the engine", "tenant", best.TenantID, "scope", best.Scope)
			}
			c.pending, c.suppressed = true, true
			return err
		}
		c.pending = true
		e.failures.WithLabelValues("publish").Inc()
		return fmt.Errorf("publish decision: %w", err)
	}
	c.pending, c.suppressed = false, false
	c.current = best
	e.recordLocked(ctx, best)
	return nil
}

func (e *Engine) clearLocked(ctx context.Context, c *condition, want limiter.Decision, a anomaly.Alert) error {
	if c.current.TenantID == "" {
		return nil // never published (suppressed): nothing of ours to clear
	}
	err := e.deps.Publisher.Clear(ctx, want.TenantID, want.Scope, want.Source)
	if errors.Is(err, limiter.ErrManualOverride) {
		e.suppressed.Inc()
		return nil // the manual decision stays; ours is gone with the alert
	}
	if err != nil {
		e.failures.WithLabelValues("publish").Inc()
		return fmt.Errorf("clear decision: %w", err)
	}
	now := e.now().UTC().Truncate(time.Second)
	d := limiter.Decision{TenantID: want.TenantID, Scope: want.Scope, Action: limiter.ActionClear,
		IssuedAt: now, ExpiresAt: now.Add(time.Second), Source: want.Source, AnomalyID: a.Fingerprint,
		Reason: "resolved: " + truncate(a.Summary, 200)}
	e.recordLocked(ctx, d)
	return nil
}

func (e *Engine) recordLocked(ctx context.Context, d limiter.Decision) {
	e.decisions.WithLabelValues(string(d.Action), string(d.Source)).Inc()
	e.log.Info("decision", "tenant", d.TenantID, "scope", d.Scope, "action", d.Action,
		"rate_per_sec", d.RatePerSec, "source", d.Source)
	if e.deps.Recorder == nil {
		return
	}
	if err := e.deps.Recorder.Record(ctx, []limiter.Decision{d}); err != nil {
		e.failures.WithLabelValues("record").Inc()
		e.log.Warn("record decision", "tenant", d.TenantID, "err", err)
	}
}

// policy maps an alert to the decision it calls for (times unset).
func (e *Engine) policy(a anomaly.Alert) (limiter.Decision, bool) {
	p := e.cfg.Plans[a.Labels["plan"]]
	if p.Disabled {
		return limiter.Decision{}, false
	}
	factor, degraded := e.cfg.ThrottleFactor, e.cfg.DegradedRatePerSec
	if p.ThrottleFactor > 0 {
		factor = p.ThrottleFactor
	}
	if p.DegradedRatePerSec > 0 {
		degraded = p.DegradedRatePerSec
	}
	d := limiter.Decision{TenantID: a.TenantID, AnomalyID: a.Fingerprint, Reason: truncate(a.Summary, 900)}
	switch a.Metric {
	case anomaly.MetricUsage:
		// The throttle limits the tenant's whole rate, so it is based on the
		// tenant's expected events, not on the one kind (or quantity) that spiked.
		base := a.Baseline
		if v, err := strconv.ParseFloat(a.Labels[anomaly.LabelTenantEventsPerMin], 64); err == nil {
			base = v
		}
		if !(base > 0) || math.IsInf(base, 0) {
			return d, false
		}
		d.Scope, d.Action, d.Source = limiter.ScopeAll, limiter.ActionThrottle, limiter.SourceAnomaly
		d.RatePerSec = max(e.cfg.MinRatePerSec, factor*base/e.cfg.BaselineWindow.Seconds())
	case anomaly.MetricErrorRate:
		if a.Integration == "" {
			return d, false
		}
		d.Scope, d.Action, d.Source = limiter.IntegrationScope(a.Integration), limiter.ActionOpenCircuit, limiter.SourceAnomaly
	case anomaly.MetricSpendCap:
		if !fullSpendCap(a) {
			return d, false
		}
		d.Scope, d.Action, d.Source = limiter.ScopeAll, limiter.ActionThrottle, limiter.SourceSpendCap
		d.RatePerSec = degraded
	default:
		return d, false
	}
	if d.Action == limiter.ActionThrottle {
		d.RatePerSec = math.Round(d.RatePerSec*1000) / 1000
		d.Burst = uint32(min(math.MaxUint32, max(1, math.Ceil(d.RatePerSec*e.cfg.BurstSeconds))))
	}
	if _, err := limiter.Key(d.TenantID, d.Scope); err != nil {
		return d, false
	}
	return d, true
}

// fullSpendCap reports whether a spend_cap alert is at 100% of the cap: the
// "threshold" label (percent, e.g. "100"), else observed/cap.
func fullSpendCap(a anomaly.Alert) bool {
	if th, ok := a.Labels["threshold"]; ok {
		v, err := strconv.ParseFloat(strings.TrimSuffix(th, "%"), 64)
		return err == nil && v >= 100
	}
	return a.Ratio >= 1
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
