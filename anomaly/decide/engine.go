package decide

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/limiter"
)

// Publisher writes decisions to the KV bucket, signed; a clear decision
// clears the key. *limiter.Publisher is one.
type Publisher interface {
	Put(ctx context.Context, d limiter.Decision) (uint64, error)
}

// Sweeper deletes expired decisions; *limiter.Publisher is one. Optional.
type Sweeper interface {
	Sweep(ctx context.Context) (int, error)
}

var (
	_ Publisher    = (*limiter.Publisher)(nil)
	_ Sweeper      = (*limiter.Publisher)(nil)
	_ anomaly.Sink = (*Engine)(nil)
)

// Deps are the engine's clients. Publisher is required. The audit trail is
// the Trail's: it records what the engine writes as it appears in the
// bucket.
type Deps struct {
	Publisher  Publisher
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

	// opMu orders the operations (Handle, Renew), so a clear never
	// overtakes a put of the same key. It is held across their KV calls,
	// each bounded by cfg.KVTimeout; nothing else takes it: Send, Active,
	// the metrics and the audit writer never wait on I/O.
	opMu sync.Mutex

	// mu guards active and the conditions' fields; it is never held across
	// I/O.
	mu      sync.Mutex
	active  map[string]*condition    // by decision key
	owns    func(tenant string) bool // tenants whose alerts the engine acts on; nil: every tenant (see Handover)
	activeN atomic.Int64             // len(active), for the gauge: a scrape never waits on mu

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

// condition is one decision key held by one or more firing alerts, or
// by decisions adopted from the bucket at a handover.
type condition struct {
	alerts     map[string]anomaly.Alert    // by fingerprint
	adopted    map[string]limiter.Decision // by anomaly_id: live decisions of another owner, renewed as they were
	current    limiter.Decision            // last decision published (zero if none yet)
	pending    bool                        // the last publish failed or was suppressed
	suppressed bool                        // a manual decision outranks it (logged once)
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

// Run handles queued alerts and renews live decisions until ctx ends or
// Close; it returns nil then. Beside it runs the sweep of expired
// decisions, so a long sweep never delays an alert.
func (e *Engine) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	if s, ok := e.deps.Publisher.(Sweeper); ok {
		wg.Go(func() { e.sweepLoop(ctx, s) })
	}
	tick := time.NewTicker(min(e.cfg.RenewEvery/4, time.Second))
	defer tick.Stop()
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
		}
	}
}

// sweepLoop deletes expired decisions every cfg.SweepEvery.
func (e *Engine) sweepLoop(ctx context.Context, s Sweeper) {
	t := time.NewTicker(e.cfg.SweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, 10*e.cfg.KVTimeout)
		n, err := s.Sweep(sctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			e.log.Warn("sweep expired decisions", "err", err)
		} else if n > 0 {
			e.log.Info("swept expired decisions", "count", n)
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

// errKVTimeout marks a KV write that ran out of cfg.KVTimeout.
var errKVTimeout = errors.New("decisions bucket did not answer in time")

// Handle applies one alert now. Alerts no policy acts on are ignored, and
// so are alerts of tenants the engine does not own (see Handover).
func (e *Engine) Handle(ctx context.Context, a anomaly.Alert) error {
	if !e.owned(a.TenantID) {
		return nil
	}
	if a.Status == anomaly.StatusResolved {
		return e.resolve(ctx, a)
	}
	want, ok := e.policy(a)
	if !ok {
		return nil
	}
	key, err := limiter.Key(want.TenantID, want.Scope)
	if err != nil {
		return err
	}
	e.opMu.Lock()
	defer e.opMu.Unlock()
	e.mu.Lock()
	c := e.active[key]
	if c == nil {
		c = &condition{alerts: map[string]anomaly.Alert{}}
		e.active[key] = c
	}
	c.alerts[a.Fingerprint] = a
	e.activeN.Store(int64(len(e.active)))
	e.mu.Unlock()
	return e.publish(ctx, c, false)
}

// resolve applies a resolution: the condition holding its episode (an
// alert, or a decision adopted at a handover) lets it go, and when it was
// the last, the decision is cleared. The resolution may name another
// heavy user than the alert that fired, or none, or no longer call for a
// decision: the condition is found by the alert's fingerprint.
func (e *Engine) resolve(ctx context.Context, a anomaly.Alert) error {
	e.opMu.Lock()
	defer e.opMu.Unlock()
	e.mu.Lock()
	var key string
	var c *condition
	if want, ok := e.policy(a); ok {
		if k, err := limiter.Key(want.TenantID, want.Scope); err == nil && e.active[k].holds(a.Fingerprint) {
			key, c = k, e.active[k]
		}
	}
	if c == nil {
		for k, held := range e.active {
			if held.holds(a.Fingerprint) {
				key, c = k, held
				break
			}
		}
	}
	if c == nil {
		e.mu.Unlock()
		return nil
	}
	want, ok := c.adopted[a.Fingerprint]
	if !ok {
		want, _ = e.policy(c.alerts[a.Fingerprint])
	}
	delete(c.alerts, a.Fingerprint)
	delete(c.adopted, a.Fingerprint)
	if len(c.alerts) == 0 && len(c.adopted) == 0 {
		delete(e.active, key)
		e.activeN.Store(int64(len(e.active)))
		current := c.current
		e.mu.Unlock()
		return e.clear(ctx, current, want, a)
	}
	e.mu.Unlock()
	return e.publish(ctx, c, false)
}

// Renew re-publishes every held decision that is due (older than
// RenewEvery) or that failed or was suppressed last time. A KV write that
// times out ends the round: the rest stay due for the next one, so an
// unreachable NATS costs one cfg.KVTimeout per round, not one per decision.
func (e *Engine) Renew(ctx context.Context) {
	e.opMu.Lock()
	defer e.opMu.Unlock()
	e.mu.Lock()
	now := e.now()
	var due []*condition
	for _, c := range e.active {
		if c.pending || now.Sub(c.current.IssuedAt) >= e.cfg.RenewEvery {
			due = append(due, c)
		}
	}
	e.mu.Unlock()
	for i, c := range due {
		err := e.publish(ctx, c, true)
		if err == nil || errors.Is(err, limiter.ErrManualOverride) {
			continue
		}
		if ctx.Err() != nil {
			return
		}
		e.log.Warn("renew decision", "err", err)
		if errors.Is(err, errKVTimeout) {
			if left := len(due) - i - 1; left > 0 {
				e.log.Warn("renewals postponed to the next round", "count", left)
			}
			return
		}
	}
}

// publish publishes the most restrictive decision the condition's alerts
// call for, when it differs from the current one or renew is set. The
// caller holds opMu, so c changes only here until it returns.
func (e *Engine) publish(ctx context.Context, c *condition, renew bool) error {
	e.mu.Lock()
	var best limiter.Decision
	bestRatio := 0.0
	fromAlert := false
	consider := func(d limiter.Decision, ratio float64, alert bool) {
		// The lowest rate wins; among equal rates, the alert furthest
		// above its baseline names the decision.
		if best.TenantID == "" || d.RatePerSec < best.RatePerSec ||
			(d.RatePerSec == best.RatePerSec && (ratio > bestRatio || (ratio == bestRatio && d.AnomalyID < best.AnomalyID))) {
			best, bestRatio, fromAlert = d, ratio, alert
		}
	}
	for _, a := range c.alerts {
		if d, ok := e.policy(a); ok {
			consider(d, a.Ratio, true)
		}
	}
	for _, d := range c.adopted {
		consider(d, 0, false)
	}
	if fromAlert && best.Action == limiter.ActionThrottle && best.Source == limiter.SourceAnomaly {
		best.Reason = usageReason(best, c.alerts)
	}
	same := c.current.TenantID != "" && c.current.Action == best.Action &&
		c.current.RatePerSec == best.RatePerSec && c.current.Burst == best.Burst && c.current.Mode == best.Mode &&
		c.current.Reason == best.Reason
	skip := best.TenantID == "" || (same && !renew && !c.pending)
	wasSuppressed := c.suppressed
	e.mu.Unlock()
	if skip {
		return nil
	}
	now := e.now().UTC().Truncate(time.Second)
	best.IssuedAt, best.ExpiresAt = now, now.Add(e.cfg.TTL)
	kctx, cancel := context.WithTimeout(ctx, e.cfg.KVTimeout)
	_, err := e.deps.Publisher.Put(kctx, best)
	timedOut := kctx.Err() != nil && ctx.Err() == nil
	cancel()

	e.mu.Lock()
	switch {
	case errors.Is(err, limiter.ErrManualOverride):
		c.pending, c.suppressed = true, true
	case err != nil:
		c.pending = true
	default:
		c.pending, c.suppressed = false, false
		c.current = best
	}
	e.mu.Unlock()
	switch {
	case errors.Is(err, limiter.ErrManualOverride):
		e.suppressed.Inc()
		if !wasSuppressed {
			e.log.Info("manual decision outranks the engine", "tenant", best.TenantID, "scope", best.Scope)
		}
		return err
	case err != nil:
		e.failures.WithLabelValues("publish").Inc()
		if timedOut {
			err = fmt.Errorf("%w: %w", errKVTimeout, err)
		}
		return fmt.Errorf("publish decision of tenant %s: %w", best.TenantID, err)
	}
	e.issued(best)
	return nil
}

// clear clears the decision current (the condition's last published one)
// after its last alert resolved.
func (e *Engine) clear(ctx context.Context, current, want limiter.Decision, a anomaly.Alert) error {
	if current.TenantID == "" {
		return nil // never published (suppressed): nothing of ours to clear
	}
	now := e.now().UTC().Truncate(time.Second)
	d := limiter.Decision{TenantID: want.TenantID, Scope: want.Scope, Action: limiter.ActionClear,
		IssuedAt: now, ExpiresAt: now.Add(time.Second), Source: want.Source, AnomalyID: a.Fingerprint,
		Reason: "resolved: " + cleanText(a.Summary, 200)}
	kctx, cancel := context.WithTimeout(ctx, e.cfg.KVTimeout)
	_, err := e.deps.Publisher.Put(kctx, d)
	timedOut := kctx.Err() != nil && ctx.Err() == nil
	cancel()
	if errors.Is(err, limiter.ErrManualOverride) {
		e.suppressed.Inc()
		return nil // the manual decision stays; ours is gone with the alert
	}
	if err != nil {
		e.failures.WithLabelValues("publish").Inc()
		if timedOut {
			err = fmt.Errorf("%w: %w", errKVTimeout, err)
		}
		return fmt.Errorf("clear decision of tenant %s: %w", want.TenantID, err)
	}
	e.issued(d)
	return nil
}

// issued counts and logs a published decision.
func (e *Engine) issued(d limiter.Decision) {
	e.decisions.WithLabelValues(string(d.Action), string(d.Source)).Inc()
	e.log.Info("decision", "tenant", d.TenantID, "scope", d.Scope, "action", d.Action,
		"rate_per_sec", d.RatePerSec, "source", d.Source, "mode", modeOf(d))
}

// policy maps an alert to the decision it calls for (times unset).
func (e *Engine) policy(a anomaly.Alert) (limiter.Decision, bool) {
	p, tp := e.cfg.Plans[a.Labels["plan"]], e.cfg.Tenants[a.TenantID]
	if p.Disabled || tp.Disabled {
		return limiter.Decision{}, false
	}
	factor, degraded := e.cfg.ThrottleFactor, e.cfg.DegradedRatePerSec
	for _, o := range []Policy{p, tp} {
		if o.ThrottleFactor > 0 {
			factor = o.ThrottleFactor
		}
		if o.DegradedRatePerSec > 0 {
			degraded = o.DegradedRatePerSec
		}
	}
	d := limiter.Decision{TenantID: a.TenantID, AnomalyID: a.Fingerprint, Reason: cleanText(a.Summary, 900)}
	if e.cfg.ModeFor(a.TenantID, a.Labels["plan"]) == limiter.ModeShadow {
		d.Mode = limiter.ModeShadow // enforce stays absent, so older limiters read it
	}
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
		if user, others, ok := e.heavyUser(a); ok {
			// One user drives the spike: throttle that user to what brings
			// the tenant back to factor x its baseline, given the others.
			d.Scope = limiter.UserScope(user)
			d.RatePerSec = max(e.cfg.MinRatePerSec, (factor*base-others)/e.cfg.BaselineWindow.Seconds())
		}
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
		d.RatePerSec = roundSignificant(d.RatePerSec, 3)
		d.Burst = uint32(min(math.MaxUint32, max(1, math.Ceil(d.RatePerSec*e.cfg.BurstSeconds))))
		if d.Source == limiter.SourceSpendCap {
			d.Reason = cleanText(fmt.Sprintf("throttled to %s/s: %s", anomaly.FormatValue(d.RatePerSec), a.Summary), 900)
		}
	}
	if _, err := limiter.Key(d.TenantID, d.Scope); err != nil {
		return d, false
	}
	return d, true
}

// heavyUser returns the user a usage alert names as its heaviest, and the
// tenant's other users' events in the window, when that user made at least
// cfg.UserShare of them and can name a scope.
func (e *Engine) heavyUser(a anomaly.Alert) (string, float64, bool) {
	user := a.Labels[anomaly.LabelTopUser]
	if e.cfg.UserShare <= 0 || user == "" || !limiter.ValidUserID(user) {
		return "", 0, false
	}
	n, err1 := strconv.ParseFloat(a.Labels[anomaly.LabelTopUserEvents], 64)
	total, err2 := strconv.ParseFloat(a.Labels[anomaly.LabelWindowEvents], 64)
	if err1 != nil || err2 != nil || !(total > 0) || math.IsInf(total, 0) || n > total || n/total < e.cfg.UserShare {
		return "", 0, false
	}
	return user, total - n, true
}

// modeOf is d's mode with the absent field read as enforce.
func modeOf(d limiter.Decision) limiter.Mode {
	if d.Mode == "" {
		return limiter.ModeEnforce
	}
	return d.Mode
}

// roundSignificant rounds v to n significant digits (11.913 -> 11.9), so a
// rate derived from a baseline reads as what it is, an estimate.
func roundSignificant(v float64, n int) float64 {
	if v == 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return v
	}
	p := math.Pow(10, float64(n-1-int(math.Floor(math.Log10(math.Abs(v))))))
	return math.Round(v*p) / p
}

// usageReason is the reason of a throttle called for by usage alerts: the
// rate it throttles the tenant's (or the heavy user's) requests to, then
// every kind that spiked,
// furthest above its baseline first, with rounded figures per minute, e.g.
// "throttled to 11.9/s: api_request at 5.1x baseline (1520 vs 298 per min),
// db_query at 3.9x baseline (402 vs 103 per min)".
func usageReason(d limiter.Decision, alerts map[string]anomaly.Alert) string {
	var spikes []anomaly.Alert
	for _, a := range alerts {
		if a.Metric == anomaly.MetricUsage && a.Status == anomaly.StatusFiring {
			spikes = append(spikes, a)
		}
	}
	sort.Slice(spikes, func(i, j int) bool {
		if spikes[i].Ratio != spikes[j].Ratio {
			return spikes[i].Ratio > spikes[j].Ratio
		}
		return spikes[i].Fingerprint < spikes[j].Fingerprint
	})
	var b strings.Builder
	if user, ok := strings.CutPrefix(d.Scope, limiter.ScopeUserPrefix); ok {
		fmt.Fprintf(&b, "user %s ", user)
	}
	fmt.Fprintf(&b, "throttled to %s/s:", anomaly.FormatValue(d.RatePerSec))
	for i, a := range spikes {
		kind := a.Kind
		if kind == "" {
			kind = "events"
		}
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, " %s at %.1fx baseline (%s vs %s per min)", kind, a.Ratio, anomaly.FormatValue(a.Observed), anomaly.FormatValue(a.Baseline))
	}
	return cleanText(b.String(), 900)
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

// cleanText is s with every control character (which a decision's reason
// refuses) turned into a space, cut to at most n bytes.
func cleanText(s string, n int) string {
	return truncate(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s), n)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
