package anomaly

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tenantguard/tenantguard/collector/store"
)

// Handed is what one Handover did.
type Handed struct {
	Dropped int // tenants released: their state is gone, their episodes left open for the new owner
	Adopted int // tenants warm-started from the store
	// Open are the open episodes of the adopted tenants (spend-cap alerts
	// included), as their firing alerts were recorded: the detector
	// continues them under these fingerprints, and resolves each once.
	Open []Alert
}

// Handover makes the detector hold state for exactly the tenants owns
// accepts, while it runs. Tenants it holds that owns rejects are dropped:
// their windows, baselines, spend and open episodes are forgotten without
// resolving anything, since their new owner continues the episodes.
// Tenants owns accepts that it does not hold are warm-started from src
// (see WarmStart): baselines, month-to-date spend, the spend thresholds
// alerted this month, and the open episodes, which continue under their
// recorded fingerprints (neither fired again nor dropped). Tenants it
// holds and owns are left alone.
//
// What was alerted comes from the anomalies table (what the ClickHouse
// sink recorded, whoever wrote it), never from replaying usage: a spend
// threshold crossed but never alerted (while no replica ran) alerts on
// the next evaluation; one alerted before does not alert again.
//
// Call it before the collector consumes newly owned tenants and after it
// stopped consuming released ones. owns must be safe to call from this
// goroutine; it is not kept.
func (d *Detector) Handover(ctx context.Context, src WarmStartReader, owns func(tenant string) bool, now time.Time) (Handed, error) {
	now = now.UTC()
	var h Handed
	if owns == nil {
		return h, errors.New("handover: nil owns")
	}
	held := map[string]bool{}
	h.Dropped = d.release(owns, held)
	want := func(id string) bool { return !held[id] && owns(id) }

	src, err := d.narrow(ctx, src, want, now)
	if err != nil {
		return h, fmt.Errorf("handover: %w", err)
	}
	// Warm the new tenants in a detector of their own: replaying the past
	// through this one would find its clock ahead of the replayed minutes.
	w := d.scratch()
	if err := w.replay(ctx, src, want, now); err != nil {
		return h, fmt.Errorf("handover: %w", err)
	}
	open, err := w.resume(ctx, src, want, now)
	if err != nil {
		return h, fmt.Errorf("handover: %w", err)
	}
	h.Adopted = d.adopt(w)
	h.Open = open
	return h, nil
}

// TenantReader reads the usage of some tenants only; *store.Store is one.
// When the WarmStartReader given to Handover is one too, a handover lists
// the tenants with usage, keeps those it takes over, and reads only their
// rows: a replica taking a third of the tenants reads a third of the rows,
// instead of reading every row and dropping two thirds.
type TenantReader interface {
	// UsageTenants lists the tenants with usage_1m rows in [from, to).
	UsageTenants(ctx context.Context, from, to time.Time) ([]string, error)
	// RollupsOf and HourlyCountsOf are WarmStartReader's Rollups and
	// HourlyCounts of the given tenants only.
	RollupsOf(ctx context.Context, tenants []string, from, to time.Time, fn func(store.UsageRow) error) error
	HourlyCountsOf(ctx context.Context, tenants []string, from, to time.Time, fn func(store.HourlyCount) error) error
}

var _ TenantReader = (*store.Store)(nil)

// narrow returns src reading the usage of the tenants want accepts only,
// when src is a TenantReader and want leaves some tenant out; else src.
// The month's spend and the episodes are read whole: one row per tenant
// or episode.
func (d *Detector) narrow(ctx context.Context, src WarmStartReader, want func(string) bool, now time.Time) (WarmStartReader, error) {
	tr, ok := src.(TenantReader)
	if !ok {
		return src, nil
	}
	from := now.Add(-d.cfg.WarmStart.History).Truncate(time.Hour)
	if rf := now.Add(-d.cfg.WarmStart.Recent).Truncate(time.Hour); rf.Before(from) {
		from = rf
	}
	listed, err := tr.UsageTenants(ctx, from, now)
	if err != nil {
		return nil, err
	}
	taken := make([]string, 0, len(listed))
	for _, tenant := range listed {
		if want(tenant) {
			taken = append(taken, tenant)
		}
	}
	if len(taken) == len(listed) {
		return src, nil
	}
	return tenantReads{WarmStartReader: src, tr: tr, tenants: taken}, nil
}

// tenantReads is a WarmStartReader whose usage reads cover only tenants.
type tenantReads struct {
	WarmStartReader
	tr      TenantReader
	tenants []string
}

func (r tenantReads) Rollups(ctx context.Context, from, to time.Time, fn func(store.UsageRow) error) error {
	return r.tr.RollupsOf(ctx, r.tenants, from, to, fn)
}

func (r tenantReads) HourlyCounts(ctx context.Context, from, to time.Time, fn func(store.HourlyCount) error) error {
	return r.tr.HourlyCountsOf(ctx, r.tenants, from, to, fn)
}

// Release drops the tenants owns rejects, as Handover does, without
// warm-starting anyone: for when tenants were only given away. It returns
// how many were dropped.
func (d *Detector) Release(owns func(tenant string) bool) int {
	return d.release(owns, nil)
}

// release drops the tenants owns rejects and notes the kept ones in held
// (when not nil).
func (d *Detector) release(owns func(string) bool, held map[string]bool) int {
	dropped := 0
	for i := range d.shards {
		sh := &d.shards[i]
		sh.mu.Lock()
		for id := range sh.tenants {
			if owns(id) {
				if held != nil {
					held[id] = true
				}
				continue
			}
			delete(sh.tenants, id)
			dropped++
		}
		sh.mu.Unlock()
	}
	return dropped
}

// scratch returns an empty detector with d's configuration and plans that
// sends nothing.
func (d *Detector) scratch() *Detector {
	w := &Detector{
		cfg:    d.cfg,
		sink:   SinkFunc(func(context.Context, Alert) {}),
		log:    d.log,
		planOf: d.planOf,
		seed:   d.seed,
		plans:  d.plans,
		def:    d.def,
		qkinds: d.qkinds,
		done:   make(chan struct{}),
	}
	w.due.Store(-1 << 30)
	for i := range w.shards {
		w.shards[i].tenants = map[string]*tenant{}
	}
	return w
}

// adopt moves every tenant of w into d, except one d already has (an
// event of it arrived during the handover: its live state stays), and
// returns how many moved. d's clock moves up to w's if it is behind (at
// start-up).
func (d *Detector) adopt(w *Detector) int {
	d.advMu.Lock()
	defer d.advMu.Unlock()
	n := 0
	for i := range w.shards {
		for id, t := range w.shards[i].tenants {
			sh := d.shard(id)
			sh.mu.Lock()
			if sh.tenants[id] == nil {
				sh.tenants[id] = t
				n++
			}
			sh.mu.Unlock()
		}
		w.shards[i].tenants = nil
	}
	if due := w.due.Load(); due > d.due.Load() {
		d.due.Store(due)
	}
	return n
}

// replay loads the seasonal profiles and replays the recent minutes of
// the tenants want accepts, with alerts muted. w is a scratch detector.
func (w *Detector) replay(ctx context.Context, src WarmStartReader, want func(string) bool, now time.Time) error {
	recentFrom := now.Add(-w.cfg.WarmStart.Recent).Truncate(time.Hour)
	histFrom := now.Add(-w.cfg.WarmStart.History).Truncate(time.Hour)

	// 1. Seasonal profiles from hourly totals.
	if histFrom.Before(recentFrom) {
		closed := int32(recentFrom.Unix()/60) - 1
		err := src.HourlyCounts(ctx, histFrom, recentFrom, func(h store.HourlyCount) error {
			if want(h.TenantID) {
				w.seedHour(h.TenantID, int32(h.Hour.Unix()/3600), float64(h.Count), closed)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}

	// 2. Levels and dispersion: replay recent minutes (w sends nothing).
	cur := int64(-1)
	lateness := w.cfg.Lateness
	skipped, firstBad, err := QueryRollups(ctx, src, recentFrom, now.Truncate(time.Minute), func(r *Rollup) error {
		if !want(r.TenantID) {
			return nil
		}
		m := r.Minute.Unix() / 60
		if cur >= 0 && m > cur {
			w.Advance(ctx, time.Unix(m*60, 0).Add(lateness))
		}
		cur = m
		w.ObserveRollup(r)
		return nil
	})
	if err != nil {
		return err
	}
	if skipped > 0 {
		w.log.Warn("warm start skipped rollups with unusable numbers", "count", skipped, "err", firstBad)
	}
	if cur >= 0 {
		w.Advance(ctx, time.Unix((cur+1)*60, 0).Add(lateness))
	}
	return nil
}

// resume replaces what the replay made up about alerts with what the
// anomalies table recorded, for the tenants want accepts: the month's
// spend and its alerted thresholds, and the open episodes. It returns the
// open episodes' alerts. w is a scratch detector.
func (w *Detector) resume(ctx context.Context, src WarmStartReader, want func(string) bool, now time.Time) ([]Alert, error) {
	monthFrom, monthTo := monthBounds(now.Unix())
	mf := time.Unix(monthFrom, 0).UTC()
	spend, err := src.SpendSince(ctx, mf)
	if err != nil {
		return nil, err
	}
	// An episode open longer than max_episode has ended (its owner was
	// gone when it expired): only younger ones are read.
	since := now.Add(-w.cfg.MaxEpisode - time.Hour)
	if mf.Before(since) {
		since = mf
	}
	// The detectors' episodes, and the spend-cap alerts (see resumeSpend).
	metrics := []string{MetricUsage, MetricCost, MetricErrorRate, MetricLatencyP95, MetricSpendCap}
	rows, err := src.LatestAnomalies(ctx, metrics, since)
	if err != nil {
		return nil, err
	}
	nowMin := int32(floorDiv64(now.Unix(), 60))

	// Spend: the replay booked only the recent minutes and checked the
	// thresholds against them; start over from the month's total.
	for i := range w.shards {
		for _, t := range w.shards[i].tenants {
			t.sp = spendState{}
		}
	}
	for tenant, v := range spend {
		if !want(tenant) {
			continue
		}
		if !finiteNonNeg(v) {
			w.log.Warn("spend is not a finite amount; ignored", "tenant", tenant, "spend", v)
			continue
		}
		t := w.tenantLocked(w.shard(tenant), tenant, nowMin)
		t.sp.from, t.sp.to, t.sp.spend = uint32(monthFrom), uint32(monthTo), v
	}

	var open []Alert
	matched := map[*series]bool{}
	for _, r := range rows {
		if !want(r.TenantID) {
			continue
		}
		if r.Metric == MetricSpendCap {
			if r.StartsAt.Unix() < monthFrom {
				continue
			}
			t := w.tenantLocked(w.shard(r.TenantID), r.TenantID, nowMin)
			if w.resumeSpend(t, r, monthFrom, monthTo) {
				open = append(open, rowAlert(r))
			}
			continue
		}
		if r.Status != string(StatusFiring) {
			continue
		}
		s := w.seriesOf(w.tenantLocked(w.shard(r.TenantID), r.TenantID, nowMin), r)
		if s == nil {
			continue
		}
		matched[s] = true
		start := int32(floorDiv64(r.StartsAt.Unix(), 60))
		if !s.firing {
			obs, base := r.Observed, r.Baseline
			if r.Metric == MetricCost {
				obs, base = obs/60, base/60 // reported per hour, kept per window
			}
			s.fire(start, obs, base, 0)
		}
		s.start = start
		open = append(open, rowAlert(r))
	}

	// An episode the replay opened that no row records was never alerted
	// (or was, and resolved): it is not carried. The series starts over
	// without a cool-down, so a spike that goes on fires again, alerted.
	for i := range w.shards {
		for _, t := range w.shards[i].tenants {
			t.eachSeries(func(s *series) {
				if s.firing && !matched[s] {
					s.firing, s.hold, s.run, s.quiet, s.cool = false, false, 0, 0, 0
					s.cusum, s.segObs, s.segExp = 0, 0, 0
				}
			})
		}
	}
	return open, nil
}

// resumeSpend marks the threshold a recorded spend_cap row alerted (and
// the lower ones, which it superseded) in t's period [from, to), and
// makes it the firing one if the row is firing. It reports whether the
// row is an open episode t continues. A row of another fingerprint (from
// before fingerprints named the period) marks the highest threshold its
// ratio reached.
func (w *Detector) resumeSpend(t *tenant, r store.AnomalyRow, from, to int64) bool {
	s := &t.sp
	if int64(s.from) != from {
		s.from, s.to, s.spend = uint32(from), uint32(to), 0
	}
	th := w.cfg.SpendThresholds
	period := time.Unix(from, 0)
	idx, exact := -1, false
	for i, f := range th {
		if SpendFingerprint(t.id, thresholdLabel(f), period) == r.Fingerprint {
			idx, exact = i, true
			break
		}
		if r.Ratio >= f {
			idx = i
		}
	}
	if idx < 0 {
		return false
	}
	s.fired |= 1<<(idx+1) - 1
	if !exact || r.Status != string(StatusFiring) || int(s.active) > idx+1 {
		return false
	}
	s.active, s.activeFrom, s.activeAt = int8(idx+1), uint32(from), uint32(r.StartsAt.Unix())
	return true
}

// seriesOf returns the series of t an episode row is about, creating its
// kind or integration; nil when there is none (a bound reached).
func (w *Detector) seriesOf(t *tenant, r store.AnomalyRow) *series {
	switch r.Metric {
	case MetricUsage:
		if k := t.kind(r.Kind, w); k != nil {
			if k.perMin == 0 {
				k.perMin = t.cntLevel
			}
			return &k.s
		}
	case MetricCost:
		return &t.costS
	case MetricLatencyP95:
		return &t.latS
	case MetricErrorRate:
		if r.Integration == "" {
			return &t.errS
		}
		if w.cfg.MaxIntegrations > 0 {
			if g := t.integration(r.Integration, w.cfg.MaxIntegrations); g != nil {
				return &g.s
			}
		}
	}
	return nil
}

// eachSeries calls fn with every series of t that can hold an episode.
func (t *tenant) eachSeries(fn func(*series)) {
	for i := range t.kinds {
		fn(&t.kinds[i].s)
	}
	integ := t.integrations()
	for i := range integ {
		fn(&integ[i].s)
	}
	fn(&t.costS)
	fn(&t.errS)
	fn(&t.latS)
}

// rowAlert is the firing alert a recorded episode row stands for.
func rowAlert(r store.AnomalyRow) Alert {
	return Alert{Fingerprint: r.Fingerprint, TenantID: r.TenantID, Metric: r.Metric, Kind: r.Kind,
		Integration: r.Integration, Status: StatusFiring, Severity: Severity(r.Severity), Observed: r.Observed,
		Baseline: r.Baseline, Ratio: r.Ratio, StartsAt: r.StartsAt, Summary: r.Summary}
}

// Open returns the fingerprints of every episode the detector holds open,
// spend-cap alerts included: what a decision adopted from another owner
// may name while it is still called for.
func (d *Detector) Open() map[string]bool {
	out := map[string]bool{}
	for i := range d.shards {
		sh := &d.shards[i]
		sh.mu.Lock()
		for _, t := range sh.tenants {
			for k := range t.kinds {
				if s := &t.kinds[k].s; s.firing {
					out[Fingerprint(t.id, MetricUsage, t.kinds[k].name, "", minuteTime(s.start))] = true
				}
			}
			integ := t.integrations()
			for g := range integ {
				if s := &integ[g].s; s.firing {
					out[Fingerprint(t.id, MetricErrorRate, "", integ[g].name, minuteTime(s.start))] = true
				}
			}
			for _, e := range []struct {
				metric string
				s      *series
			}{{MetricCost, &t.costS}, {MetricErrorRate, &t.errS}, {MetricLatencyP95, &t.latS}} {
				if e.s.firing {
					out[Fingerprint(t.id, e.metric, "", "", minuteTime(e.s.start))] = true
				}
			}
			if sp := &t.sp; sp.active != 0 && int(sp.active) <= len(d.cfg.SpendThresholds) {
				out[SpendFingerprint(t.id, thresholdLabel(d.cfg.SpendThresholds[sp.active-1]), time.Unix(int64(sp.activeFrom), 0))] = true
			}
		}
		sh.mu.Unlock()
	}
	return out
}
