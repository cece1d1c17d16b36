package sim

import (
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/tenantguard/tenantguard/anomaly"
)

// MinScoredRate is the volume (events per hour) from which the goals apply.
const MinScoredRate = 120

// Report holds the quality figures of one evaluation.
type Report struct {
	Tenants, ScoredTenants int
	TenantDays             float64 // scored tenant-days, tenants >= 120/h
	Episodes               int     // all episodes in the scored period

	Spikes30, Spikes30Hit   int     // 3x spikes >= 30 min, tenants >= 120/h
	Spikes15, Spikes15Hit   int     // 3x spikes 15-30 min, tenants >= 120/h
	SpikesLow, SpikesLowHit int     // 3x spikes on tenants < 120/h
	MedianDelay             float64 // minutes (1-minute windows) from spike start to detection
	P90Delay                float64
	LatDoubling, LatHit     int // P95 doublings with >= 50 samples per window
	ErrBursts, ErrHit       int
	TruePos                 int // episodes matching an injection of their metric
	FalseAlerts             int // episodes matching nothing, tenants >= 120/h
	FalseAlertsLow          int // same, tenants < 120/h
	ShiftAlerts             int // false alerts within 48 h after a +30% shift
	WeekendAlerts           int // false alerts on Sat, Sun or Monday morning
	// Resolution of 3x spikes >= 30 min (tenants >= 120/h) that were hit:
	// minutes from the spike's end to the episode's ends_at (the start of
	// its quiet run; the resolve is sent quiet_period later), per metric.
	UsageClear, CostClear Quantiles
	StillFiring           int // usage or cost episodes of those spikes still firing 2 h after the spike
	// Usage or cost episodes of those spikes resolved (ends_at +
	// quiet_period) before the spike ended: the detector let go of a spike
	// that was still running (Evaluate only; Score does not know the
	// quiet period and counts ends_at before the end).
	MidSpikeResolves int
	Refires          int // usage or cost episodes of those spikes after the first, per metric
	ByMetric         map[string]int
	False            []anomaly.Episode // the false alerts, tenants >= 120/h
	Elapsed          time.Duration
	Rows             int
}

// Recall on 3x spikes >= 30 minutes.
func (r *Report) Recall() float64 { return ratio(r.Spikes30Hit, r.Spikes30) }

// LatRecall is the recall on P95 doublings with >= 50 samples per window.
func (r *Report) LatRecall() float64 { return ratio(r.LatHit, r.LatDoubling) }

// Precision of all episodes in the scored period.
func (r *Report) Precision() float64 { return ratio(r.TruePos, r.Episodes) }

// FalsePerTenantDay on tenants >= 120/h.
func (r *Report) FalsePerTenantDay() float64 {
	if r.TenantDays == 0 {
		return 0
	}
	return float64(r.FalseAlerts) / r.TenantDays
}

// Quantiles summarizes a sample of minutes.
type Quantiles struct {
	N                int
	Median, P90, Max float64
}

func quantiles(xs []float64) Quantiles {
	if len(xs) == 0 {
		return Quantiles{}
	}
	sort.Float64s(xs)
	n := len(xs)
	q := Quantiles{N: n, Median: xs[n/2], P90: xs[n*9/10], Max: xs[n-1]}
	if n%2 == 0 {
		q.Median = (xs[n/2-1] + xs[n/2]) / 2
	}
	return q
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Evaluate generates traffic with gen, replays it through the detector with
// cfg, and scores the episodes against the injections.
func Evaluate(gen Config, cfg anomaly.Config) (*Report, []anomaly.Episode, error) {
	gen.fill()
	rp, err := anomaly.NewReplayer(cfg)
	if err != nil {
		return nil, nil, err
	}
	start := time.Now()
	rows := 0
	tr := Generate(gen, func(r *anomaly.Rollup) { rows++; rp.Rollup(r) })
	eps := rp.Finish(30 * time.Minute)
	rep := score(tr, eps, cfg.QuietPeriod)
	rep.Elapsed, rep.Rows = time.Since(start), rows
	return rep, eps, nil
}

// Score matches episodes to injections.
func Score(tr *Truth, eps []anomaly.Episode) *Report { return score(tr, eps, 0) }

// score is Score with the detector's quiet period, for MidSpikeResolves.
func score(tr *Truth, eps []anomaly.Episode, quiet time.Duration) *Report {
	cfg := tr.Config
	from := cfg.Start.Add(time.Duration(cfg.WarmupDays) * 24 * time.Hour)
	to := cfg.Start.Add(time.Duration(cfg.Days) * 24 * time.Hour)
	rate := map[string]float64{}
	rep := &Report{Tenants: len(tr.Tenants), ByMetric: map[string]int{}}
	for _, t := range tr.Tenants {
		rate[t.ID] = t.Rate
		if t.Rate >= MinScoredRate {
			rep.ScoredTenants++
		}
	}
	rep.TenantDays = float64(rep.ScoredTenants) * to.Sub(from).Hours() / 24
	byTenant := map[string][]int{}
	for i, e := range eps {
		if e.StartsAt.Before(from) && e.DetectedAt.Before(from) {
			continue // warm-up
		}
		byTenant[e.TenantID] = append(byTenant[e.TenantID], i)
	}
	matched := make([]bool, len(eps))
	metricOf := map[string][]string{
		InjSpike:   {anomaly.MetricUsage, anomaly.MetricCost},
		InjLatency: {anomaly.MetricLatencyP95},
		InjErrors:  {anomaly.MetricErrorRate},
	}
	var delays []float64
	clear := map[string][]float64{}
	for _, in := range tr.Injections {
		if in.Type == InjShift {
			continue
		}
		hit := false
		first := time.Time{}
		for _, i := range byTenant[in.Tenant] {
			e := eps[i]
			if !contains(metricOf[in.Type], e.Metric) {
				continue
			}
			end := to
			if e.EndsAt != nil {
				end = *e.EndsAt
			}
			// Overlap with the injection, allowing the detector to start
			// a little early (CUSUM change point) and to resolve late.
			if e.DetectedAt.Before(in.Start) || !e.StartsAt.Before(in.End.Add(10*time.Minute)) || !end.After(in.Start) {
				continue
			}
			matched[i] = true
			if e.Metric == metricOf[in.Type][0] && e.DetectedAt.Before(in.End.Add(10*time.Minute)) {
				if !hit || e.DetectedAt.Before(first) {
					first = e.DetectedAt
				}
				hit = true
			}
		}
		// Late-resolving follow-ups of the same incident also count as matched.
		for _, i := range byTenant[in.Tenant] {
			e := eps[i]
			if contains(metricOf[in.Type], e.Metric) && !e.StartsAt.Before(in.Start.Add(-10*time.Minute)) && e.StartsAt.Before(in.End.Add(30*time.Minute)) {
				matched[i] = true
			}
		}
		low := rate[in.Tenant] < MinScoredRate
		dur := in.End.Sub(in.Start)
		switch in.Type {
		case InjSpike:
			switch {
			case low:
				rep.SpikesLow++
				rep.SpikesLowHit += b2i(hit)
			case dur >= 30*time.Minute:
				rep.Spikes30++
				rep.Spikes30Hit += b2i(hit)
				if hit {
					delays = append(delays, first.Sub(in.Start).Minutes())
					rep.scoreResolve(eps, byTenant[in.Tenant], in, to, quiet, clear)
				}
			default:
				rep.Spikes15++
				rep.Spikes15Hit += b2i(hit)
			}
		case InjLatency:
			// >= 50 samples per window: the trough of the day must clear it.
			if tt := tenantByID(tr, in.Tenant); tt != nil && tt.Rate/60*(1-tt.dayAmp)*tt.weekend >= 50 {
				rep.LatDoubling++
				rep.LatHit += b2i(hit)
			}
		case InjErrors:
			if !low {
				rep.ErrBursts++
				rep.ErrHit += b2i(hit)
			}
		}
	}
	shifts := map[string]time.Time{}
	for _, in := range tr.Injections {
		if in.Type == InjShift {
			shifts[in.Tenant] = in.Start
		}
	}
	for _, idxs := range byTenant {
		for _, i := range idxs {
			e := eps[i]
			rep.Episodes++
			rep.ByMetric[e.Metric]++
			if matched[i] {
				rep.TruePos++
				continue
			}
			if rate[e.TenantID] < MinScoredRate {
				rep.FalseAlertsLow++
				continue
			}
			rep.FalseAlerts++
			rep.False = append(rep.False, e)
			if s, ok := shifts[e.TenantID]; ok && !e.StartsAt.Before(s.Add(-time.Hour)) && e.StartsAt.Before(s.Add(48*time.Hour)) {
				rep.ShiftAlerts++
			}
			wd := e.StartsAt.Weekday()
			if wd == time.Saturday || wd == time.Sunday || (wd == time.Monday && e.StartsAt.Hour() < 12) {
				rep.WeekendAlerts++
			}
		}
	}
	rep.UsageClear = quantiles(clear[anomaly.MetricUsage])
	rep.CostClear = quantiles(clear[anomaly.MetricCost])
	sort.Float64s(delays)
	if n := len(delays); n > 0 {
		rep.MedianDelay = delays[n/2]
		if n%2 == 0 {
			rep.MedianDelay = (delays[n/2-1] + delays[n/2]) / 2
		}
		rep.P90Delay = delays[n*9/10]
	}
	return rep
}

// scoreResolve looks at the usage and cost episodes of a hit spike in:
// for each metric, how long after the spike's end the last one's quiet run
// started (its ends_at), how many resolved while the spike still ran and
// how many fired again.
func (r *Report) scoreResolve(eps []anomaly.Episode, idxs []int, in Injection, to time.Time, quiet time.Duration, clear map[string][]float64) {
	for _, metric := range []string{anomaly.MetricUsage, anomaly.MetricCost} {
		var last *anomaly.Episode
		n := 0
		for _, i := range idxs {
			e := &eps[i]
			if e.Metric != metric || e.DetectedAt.Before(in.Start) || !e.StartsAt.Before(in.End.Add(10*time.Minute)) {
				continue
			}
			if e.EndsAt != nil && !e.EndsAt.After(in.Start) {
				continue
			}
			n++
			if e.EndsAt != nil && e.EndsAt.Add(quiet).Before(in.End) {
				r.MidSpikeResolves++
			}
			if last == nil || e.StartsAt.After(last.StartsAt) {
				last = e
			}
		}
		if n > 1 {
			r.Refires += n - 1
		}
		switch {
		case last == nil:
		case last.EndsAt == nil && in.End.Add(2*time.Hour).Before(to):
			r.StillFiring++
		case last.EndsAt != nil:
			clear[metric] = append(clear[metric], last.EndsAt.Sub(in.End).Minutes())
		}
	}
}

func tenantByID(tr *Truth, id string) *Tenant {
	for _, t := range tr.Tenants {
		if t.ID == id {
			return t
		}
	}
	return nil
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Print writes the report and whether each goal is met.
func (r *Report) Print(w io.Writer) {
	ok := func(b bool) string {
		if b {
			return "PASS"
		}
		return "FAIL"
	}
	fmt.Fprintf(w, "tenants %d (%d with >= %d events/h), %.0f scored tenant-days, %d rows replayed in %s\n",
		r.Tenants, r.ScoredTenants, MinScoredRate, r.TenantDays, r.Rows, r.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "recall, 3x spikes >= 30 min:        %.3f (%d/%d)  goal >= 0.95  %s\n", r.Recall(), r.Spikes30Hit, r.Spikes30, ok(r.Recall() >= 0.95))
	fmt.Fprintf(w, "recall, 3x spikes 15-30 min:        %.3f (%d/%d)  (no goal)\n", ratio(r.Spikes15Hit, r.Spikes15), r.Spikes15Hit, r.Spikes15)
	fmt.Fprintf(w, "recall, spikes on tenants < 120/h:  %.3f (%d/%d)  (suppressed by min_volume)\n", ratio(r.SpikesLowHit, r.SpikesLow), r.SpikesLowHit, r.SpikesLow)
	fmt.Fprintf(w, "precision, all episodes:            %.3f (%d/%d)\n", r.Precision(), r.TruePos, r.Episodes)
	fmt.Fprintf(w, "false alerts per tenant-day:        %.5f (%d)  goal <= 0.001  %s\n", r.FalsePerTenantDay(), r.FalseAlerts, ok(r.FalsePerTenantDay() <= 0.001))
	fmt.Fprintf(w, "false alerts, tenants < 120/h:      %d\n", r.FalseAlertsLow)
	fmt.Fprintf(w, "alerts after +30%% level shifts:     %d  goal 0  %s\n", r.ShiftAlerts, ok(r.ShiftAlerts == 0))
	fmt.Fprintf(w, "false alerts on weekends/Mon a.m.:  %d  goal 0  %s\n", r.WeekendAlerts, ok(r.WeekendAlerts == 0))
	fmt.Fprintf(w, "detection delay, 1-min windows:     median %.1f, p90 %.1f  goal median <= 2  %s\n", r.MedianDelay, r.P90Delay, ok(r.MedianDelay <= 2))
	fmt.Fprintf(w, "recall, P95 doubling (>= 50/window): %.3f (%d/%d)  goal >= 0.95  %s\n", ratio(r.LatHit, r.LatDoubling), r.LatHit, r.LatDoubling, ok(r.LatRecall() >= 0.95))
	fmt.Fprintf(w, "recall, error-rate bursts to 10%%:    %.3f (%d/%d)  (no goal)\n", ratio(r.ErrHit, r.ErrBursts), r.ErrHit, r.ErrBursts)
	fmt.Fprintf(w, "clear after 3x spike ends (ends_at - end, min): usage median %.1f p90 %.1f max %.0f (n %d), cost median %.1f p90 %.1f max %.0f (n %d); resolve sent quiet_period later\n",
		r.UsageClear.Median, r.UsageClear.P90, r.UsageClear.Max, r.UsageClear.N, r.CostClear.Median, r.CostClear.P90, r.CostClear.Max, r.CostClear.N)
	fmt.Fprintf(w, "usage/cost episodes of those spikes: resolved mid-spike %d, fired again %d, still firing 2 h after %d\n", r.MidSpikeResolves, r.Refires, r.StillFiring)
	keys := make([]string, 0, len(r.ByMetric))
	for k := range r.ByMetric {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprint(w, "episodes by metric:")
	for _, k := range keys {
		fmt.Fprintf(w, " %s=%d", k, r.ByMetric[k])
	}
	fmt.Fprintln(w)
}
