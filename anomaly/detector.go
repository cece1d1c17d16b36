package anomaly

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
)

const numShards = 64

// DefaultPlan is the plan of tenants the plan lookup doesn't know.
const DefaultPlan = "default"

// planParams are the resolved parameters of one plan.
type planParams struct {
	name      string
	usage     countParams
	cost      countParams
	errs      countParams
	lat       latParams
	errFloor  float64 // max(base_floor, min_rate/ratio)
	minVolume float64 // events per hour
	spendCap  float64 // 0: none
}

type shard struct {
	mu      sync.Mutex
	tenants map[string]*tenant
	late    uint64 // events too late (or too early) for an open window
	_       [32]byte
}

// Stats are counters of the detector since New.
type Stats struct {
	Tenants     int    // tenants with state
	LateEvents  uint64 // events that arrived after their window closed
	Alerts      uint64 // alerts sent (firing and resolved)
	Evaluations uint64 // tenant-minutes evaluated
	FastAlerts  uint64 // usage and cost alerts fired by the fast path
}

// Detector is the anomaly stage. Observe is safe for concurrent use;
// Advance calls are serialized.
type Detector struct {
	cfg    Config
	sink   Sink
	log    *slog.Logger
	planOf func(tenant string) string // nil: every tenant is on plan "default"
	seed   maphash.Seed
	shards [numShards]shard
	plans  map[string]*planParams
	def    *planParams
	qkinds map[string]bool

	advMu  sync.Mutex
	due    atomic.Int32 // last minute closed
	buf    []Alert
	alerts atomic.Uint64
	evals  atomic.Uint64
	fast   atomic.Uint64

	closeOnce sync.Once
	done      chan struct{}
}

// Option configures a Detector.
type Option func(*Detector)

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option { return func(d *Detector) { d.log = l } }

// WithTenantPlan tells the detector each tenant's plan (the price book's
// pricing.tenants), for per-plan settings and spend caps. Without it every
// tenant is on plan "default".
func WithTenantPlan(planOf func(tenant string) string) Option {
	return func(d *Detector) { d.planOf = planOf }
}

// New validates cfg and returns a detector that sends alerts to sink.
func New(cfg Config, sink Sink, opts ...Option) (*Detector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if sink == nil {
		return nil, fmt.Errorf("anomaly: nil sink")
	}
	d := &Detector{
		cfg:    cfg,
		sink:   sink,
		log:    slog.New(slog.DiscardHandler),
		seed:   maphash.MakeSeed(),
		plans:  map[string]*planParams{},
		qkinds: map[string]bool{},
		done:   make(chan struct{}),
	}
	d.due.Store(-1 << 30)
	for _, o := range opts {
		o(d)
	}
	d.log = d.log.With("component", "anomaly")
	for i := range d.shards {
		d.shards[i].tenants = map[string]*tenant{}
	}
	for _, k := range cfg.QuantityKinds {
		d.qkinds[k] = true
	}
	d.def = d.buildPlan(DefaultPlan)
	for name := range cfg.Plans {
		d.plans[name] = d.buildPlan(name)
	}
	for name := range cfg.SpendCaps {
		if d.plans[name] == nil {
			d.plans[name] = d.buildPlan(name)
		}
	}
	if p := d.plans[DefaultPlan]; p != nil {
		d.def = p
	}
	return d, nil
}

func (d *Detector) buildPlan(name string) *planParams {
	c := &d.cfg
	o := c.Plans[name]
	or := func(v, def float64) float64 {
		if v != 0 {
			return v
		}
		return def
	}
	pp := &planParams{
		name:      name,
		usage:     newCountParams(c, or(o.UsageFactor, c.Usage.Factor)),
		cost:      newCountParams(c, or(o.CostFactor, c.Cost.Factor)),
		errs:      newCountParams(c, or(o.ErrorFactor, c.ErrorRate.Factor)),
		lat:       newLatParams(c, or(o.LatencyFactor, c.Latency.Factor)),
		minVolume: or(o.MinVolume, c.MinVolume),
		spendCap:  c.SpendCaps[name],
	}
	pp.errs.fastH = 0           // the fast path is for usage and cost,
	pp.errs.long = longParams{} // and so are the long windows
	pp.errs.nb = false
	pp.errFloor = max(c.ErrorRate.BaseFloor, c.ErrorRate.MinRate/pp.errs.minRatio)
	return pp
}

func (d *Detector) plan(t *tenant) *planParams { return t.pp }

func (d *Detector) lookupPlan(tenant string) *planParams {
	if d.planOf == nil {
		return d.def
	}
	if p := d.plans[d.planOf(tenant)]; p != nil {
		return p
	}
	return d.def
}

func (d *Detector) shard(tenant string) *shard {
	return &d.shards[maphash.String(d.seed, tenant)%numShards]
}

// tenantLocked returns t's state, creating it for an event at minute m.
func (d *Detector) tenantLocked(sh *shard, id string, m int32) *tenant {
	t := sh.tenants[id]
	if t == nil {
		closed := max(m-1, d.due.Load())
		t = newTenant(id, d.lookupPlan(id), m, closed)
		sh.tenants[t.id] = t
	}
	return t
}

// Observe records one stored event and its cost. It is the collector's hot
// path: no allocations once the tenant, kind and integration are known.
func (d *Detector) Observe(e *event.Event, cost float64) { d.observe(e, cost) }

// observe is Observe reporting whether the event reached an open window.
func (d *Detector) observe(e *event.Event, cost float64) bool {
	sec := e.Time.Unix()
	m := int32(floorDiv64(sec, 60))
	sh := d.shard(e.TenantID)
	sh.mu.Lock()
	t := sh.tenants[e.TenantID]
	if t == nil {
		t = d.tenantLocked(sh, e.TenantID, m)
		// Created mid-minute into an open window: that window is partial.
		t.partial = sec > int64(m)*60 && m > t.lastClosed
	}
	t.sp.add(sec, cost)
	i, ok := t.slot(m)
	if !ok {
		sh.late++
		sh.mu.Unlock()
		return false
	}
	if m > t.lastSeen {
		t.lastSeen = m
	}
	// A request the limiter turned away (attrs.rejected, set by the SDK's
	// middleware and transport) is not a failure: counting its 503 would
	// keep the error rate, and the circuit it came from, up for good.
	isErr := e.Error || (e.StatusCode >= 500 && e.Attrs["rejected"] == "")
	t.count[i]++
	if isErr {
		t.errs[i]++
	}
	if e.LatencyMs > 0 {
		t.lat[i].add(e.LatencyMs, 1)
		t.latN[i]++
	}
	t.cost[i] += float32(cost)
	t.observeUser(e.UserID, i, d.cfg.TopUsers)
	if k := t.kind(e.Kind, d); k != nil {
		k.cnt[i]++
		k.qty[i] += float32(e.Quantity)
	}
	if d.cfg.MaxIntegrations > 0 {
		name := e.Attrs["integration"]
		if name == "" {
			name = e.Route
		}
		if name != "" {
			if g := t.integration(name, d.cfg.MaxIntegrations); g != nil {
				g.cnt[i]++
				if isErr {
					g.errs[i]++
				}
			}
		}
	}
	sh.mu.Unlock()
	return true
}

// Rollup is one per-minute aggregate of a tenant and kind, as stored in
// usage_1m or read from a replay CSV.
type Rollup struct {
	Minute       time.Time
	TenantID     string
	Kind         string
	Count        uint64
	Quantity     float64
	Errors       uint64
	Cost         float64
	LatencyP95   float64 // ms; 0 when unknown
	LatencyCount uint64  // samples behind LatencyP95; 0 means Count
}

// ObserveRollup records a per-minute rollup through the same windows as
// Observe. It reports false when the minute is already closed, or when the
// rollup's numbers are unusable (see Rollup.Check).
func (d *Detector) ObserveRollup(r *Rollup) bool {
	if !r.usable() {
		return false
	}
	sec := r.Minute.Unix()
	m := int32(floorDiv64(sec, 60))
	sh := d.shard(r.TenantID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := d.tenantLocked(sh, r.TenantID, m)
	t.sp.add(sec, r.Cost)
	i, ok := t.slot(m)
	if !ok {
		sh.late++
		return false
	}
	if m > t.lastSeen {
		t.lastSeen = m
	}
	c := uint32(min(r.Count, 1<<31))
	t.count[i] += c
	t.errs[i] += uint32(min(r.Errors, 1<<31))
	t.cost[i] += float32(r.Cost)
	if r.LatencyP95 > 0 {
		n := uint32(min(r.LatencyCount, 1<<31))
		if n == 0 {
			n = c
		}
		t.lat[i].add(r.LatencyP95, n)
		t.latN[i] += n
	}
	if k := t.kind(r.Kind, d); k != nil {
		k.cnt[i] += c
		k.qty[i] += float32(r.Quantity)
	}
	return true
}

// Advance closes and evaluates every window that ended at least lateness
// before now, checks spend caps, and sends the resulting alerts. Run calls
// it on a clock; replay calls it with a simulated clock.
func (d *Detector) Advance(ctx context.Context, now time.Time) {
	d.advMu.Lock()
	defer d.advMu.Unlock()
	sec := now.Unix()
	due := int32(floorDiv64(sec-int64(d.cfg.Lateness/time.Second), 60)) - 1
	if prev := d.due.Load(); due < prev {
		due = prev
	}
	evict := int32(d.cfg.IdleEvict / time.Minute)
	fast := d.cfg.FastPath.Enabled
	minElapsed := int64(d.cfg.FastPath.MinElapsed / time.Second)
	var evals uint64
	for si := range d.shards {
		sh := &d.shards[si]
		d.buf = d.buf[:0]
		sh.mu.Lock()
		for id, t := range sh.tenants {
			if t.lastClosed < due {
				from := t.lastClosed + 1
				if due-from > evict {
					from = due - evict // a long gap (replay jumps): older idle minutes change nothing
				}
				evals += uint64(due - from + 1)
				for m := from; m <= due; m++ {
					d.closeMinute(t, m, &d.buf)
				}
				t.lastClosed = due
			}
			if fast {
				d.checkOpen(t, sec, minElapsed, &d.buf)
			}
			d.checkSpend(t, sec, &d.buf)
			if due-t.lastSeen > evict && !t.anyFiring() {
				delete(sh.tenants, id)
			}
		}
		sh.mu.Unlock()
		for i := range d.buf {
			d.sink.Send(ctx, d.buf[i])
		}
		d.alerts.Add(uint64(len(d.buf)))
	}
	d.evals.Add(evals)
	d.due.Store(due)
}

func (t *tenant) anyFiring() bool {
	if t.latS.firing || t.errS.firing || t.costS.firing || t.sp.active != 0 {
		return true
	}
	for i := range t.kinds {
		if t.kinds[i].s.firing {
			return true
		}
	}
	integ := t.integrations()
	for i := range integ {
		if integ[i].s.firing {
			return true
		}
	}
	return false
}

// Run evaluates every EvalInterval until ctx ends, then returns nil.
func (d *Detector) Run(ctx context.Context) error {
	tick := time.NewTicker(d.cfg.EvalInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.done:
			return nil
		case now := <-tick.C:
			start := time.Now()
			d.Advance(ctx, now)
			if took := time.Since(start); took > d.cfg.EvalInterval/2 {
				d.log.Warn("evaluation cycle slow", "duration", took, "count", d.Stats().Tenants)
			}
		}
	}
}

// Close stops Run. It is idempotent.
func (d *Detector) Close() error {
	d.closeOnce.Do(func() { close(d.done) })
	return nil
}

// Stats returns the detector's counters.
func (d *Detector) Stats() Stats {
	var s Stats
	for i := range d.shards {
		sh := &d.shards[i]
		sh.mu.Lock()
		s.Tenants += len(sh.tenants)
		s.LateEvents += sh.late
		sh.mu.Unlock()
	}
	s.Alerts = d.alerts.Load()
	s.Evaluations = d.evals.Load()
	s.FastAlerts = d.fast.Load()
	return s
}

func floorDiv64(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func minuteTime(m int32) time.Time { return time.Unix(int64(m)*60, 0).UTC() }

func severityFor(ratio, factor float64) Severity {
	if ratio >= factor {
		return SeverityCritical
	}
	return SeverityWarning
}

// countAlert builds the alert of a count-like series transition; scale
// converts per-window values to the reported unit (60 for per hour).
func (d *Detector) countAlert(t *tenant, metric, kind, integ string, s *series, tr transition, m int32, p *countParams, scale float64) Alert {
	if tr == firedFast {
		d.fast.Add(1)
	}
	return d.newAlert(t, metric, kind, integ, s, tr, m, float64(s.obs)*scale, float64(s.base)*scale, p.factor)
}

// usageAlert builds the alert of a usage transition of kind ks at minute
// m (seasonal index idx). A usage alert may be about one kind, or a
// quantity such as tokens; a throttle limits the tenant's whole request
// rate, so it carries the tenant's expected events per minute for the
// decision engine, and the tenant's heaviest user of the window, both
// taken when the episode fires: the firing and the resolved alert carry
// the same labels (Alertmanager identifies an alert by them).
func (d *Detector) usageAlert(t *tenant, ks *kindState, tr transition, m int32, idx float64) Alert {
	if tr != resolved {
		ks.perMin = t.cntLevel * float32(idx)
		ks.heavy = t.heavy
	}
	a := d.countAlert(t, MetricUsage, ks.name, "", &ks.s, tr, m, &t.pp.usage, 1)
	a.Labels[LabelPlan] = t.pp.name
	a.Labels[LabelTenantEventsPerMin] = strconv.FormatFloat(float64(ks.perMin), 'f', 3, 64)
	ks.heavy.addLabels(a.Labels)
	return a
}

func (d *Detector) latencyAlert(t *tenant, tr transition, m int32, p *latParams) Alert {
	s := &t.latS
	return d.newAlert(t, MetricLatencyP95, "", "", s, tr, m, float64(s.obs), float64(s.base), p.factor)
}

func (d *Detector) newAlert(t *tenant, metric, kind, integ string, s *series, tr transition, m int32, obs, base, factor float64) Alert {
	ratio := 0.0
	if base > 0 {
		ratio = obs / base
	}
	a := Alert{
		TenantID:    t.id,
		Metric:      metric,
		Kind:        kind,
		Integration: integ,
		Status:      StatusFiring,
		Severity:    severityFor(ratio, factor),
		Observed:    obs,
		Baseline:    base,
		Ratio:       ratio,
		StartsAt:    minuteTime(s.start),
		Labels:      map[string]string{LabelScale: scaleLabel(s.scale)},
	}
	a.Fingerprint = Fingerprint(t.id, metric, kind, integ, a.StartsAt)
	what := metric
	if kind != "" {
		what += " of " + kind
	}
	if integ != "" {
		what += " on " + integ
	}
	if tr == resolved {
		a.Status = StatusResolved
		a.EndsAt = minuteTime(s.endsAt(m))
		a.Summary = fmt.Sprintf("tenant %s: %s back to normal (was %s, %.1fx baseline %s)", t.id, what, FormatValue(obs), ratio, FormatValue(base))
	} else {
		a.Summary = fmt.Sprintf("tenant %s: %s at %.1fx baseline (%s vs %s)", t.id, what, ratio, FormatValue(obs), FormatValue(base))
	}
	return a
}
