package sim

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/anomaly"
)

// Goals the report checks.
const (
	// GoalRate is the volume (events per minute) from which the recall
	// goal applies.
	GoalRate        = 1.0
	GoalRecall      = 0.98
	GoalFalsePerDay = 0.001 // false alerts per tenant-day, every tenant
	GoalLatRecall   = 0.95
	GoalDelayBusy   = 2.0  // median minutes, tenants >= 10 events/min
	GoalDelaySmall  = 15.0 // median minutes, tenants at 1-10 events/min
)

// Bands are the volume bands of the report, in events per minute.
var Bands = [4]struct {
	Name   string
	Lo, Hi float64
}{{"< 1", 0, 1}, {"1-10", 1, 10}, {"10-100", 10, 100}, {"> 100", 100, 1e300}}

func bandOf(rate float64) int {
	for i := len(Bands) - 1; i > 0; i-- {
		if rate >= Bands[i].Lo {
			return i
		}
	}
	return 0
}

// BandReport holds the figures of one volume band.
type BandReport struct {
	Tenants    int
	TenantDays float64
	Spikes     int // 3x spikes (30 min - 4 h)
	Hit        int // detected by a usage episode before the spike ended + 10 min
	Delay      Quantiles
	// False alerts: episodes that match no injection.
	False int
	// Resolution of the usage episodes of hit spikes: minutes from the
	// spike's end to the resolve (sent), and how many came later than
	// quiet_period plus two windows of the episode's scale.
	Resolve      Quantiles
	LateResolves int
	MidSpike     int // usage or cost episodes of a spike resolved before it ended
	Refires      int // usage or cost episodes of a spike after the first, per metric
	StillFiring  int // usage or cost episodes still firing 2 h after the spike
	Scales       map[string]int
}

// Recall of the band's spikes.
func (b *BandReport) Recall() float64 { return ratio(b.Hit, b.Spikes) }

// FalsePerTenantDay of the band.
func (b *BandReport) FalsePerTenantDay() float64 {
	if b.TenantDays == 0 {
		return 0
	}
	return float64(b.False) / b.TenantDays
}

// Report holds the quality figures of one evaluation.
type Report struct {
	Tenants    int
	TenantDays float64 // scored tenant-days, every tenant
	Episodes   int     // all episodes in the scored period
	Band       [len(Bands)]BandReport

	LatDoubling, LatHit int // P95 doublings with >= 50 samples per window
	ErrBursts, ErrHit   int // error bursts on tenants >= 1 event/min
	TruePos             int // episodes matching an injection of their metric
	ShiftAlerts         int // false alerts within 48 h after a +30% shift
	WeekendAlerts       int // false alerts on Sat, Sun or Monday morning
	ByMetric            map[string]int
	False               []anomaly.Episode // the false alerts
	Elapsed             time.Duration
	Rows                int
}

// Recall on 3x spikes of tenants at >= 1 event/min.
func (r *Report) Recall() float64 {
	var n, hit int
	for i := range r.Band {
		if Bands[i].Lo >= GoalRate {
			n += r.Band[i].Spikes
			hit += r.Band[i].Hit
		}
	}
	return ratio(hit, n)
}

// FalseAlerts counts the false alerts of every band.
func (r *Report) FalseAlerts() int {
	n := 0
	for i := range r.Band {
		n += r.Band[i].False
	}
	return n
}

// FalsePerTenantDay over every tenant.
func (r *Report) FalsePerTenantDay() float64 {
	if r.TenantDays == 0 {
		return 0
	}
	return float64(r.FalseAlerts()) / r.TenantDays
}

// LatRecall is the recall on P95 doublings with >= 50 samples per window.
func (r *Report) LatRecall() float64 { return ratio(r.LatHit, r.LatDoubling) }

// Precision of all episodes in the scored period.
func (r *Report) Precision() float64 { return ratio(r.TruePos, r.Episodes) }

// Missed lists the goals the report misses; empty when every goal is met.
func (r *Report) Missed() []string {
	var out []string
	if r.Recall() < GoalRecall {
		out = append(out, "recall")
	}
	if r.FalsePerTenantDay() > GoalFalsePerDay {
		out = append(out, "false alerts")
	}
	if r.ShiftAlerts > 0 {
		out = append(out, "alerts on level shifts")
	}
	if r.LatRecall() < GoalLatRecall {
		out = append(out, "latency recall")
	}
	if b := &r.Band[1]; b.Spikes > 0 && b.Delay.Median > GoalDelaySmall {
		out = append(out, "delay at 1-10 events/min")
	}
	for i := 2; i < len(r.Band); i++ {
		if b := &r.Band[i]; b.Spikes > 0 && b.Delay.Median > GoalDelayBusy {
			out = append(out, "delay at "+Bands[i].Name+" events/min")
		}
	}
	return out
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
	eps := rp.Finish(3 * time.Hour)
	rep := Score(tr, eps, cfg.QuietPeriod)
	rep.Elapsed, rep.Rows = time.Since(start), rows
	return rep, eps, nil
}

// ScaleMinutes parses an episode's scale ("15m"); an empty or unknown
// scale is one minute.
func ScaleMinutes(s string) float64 {
	v, err := strconv.Atoi(strings.TrimSuffix(s, "m"))
	if err != nil || v < 1 {
		return 1
	}
	return float64(v)
}

// Score matches episodes to injections; quiet is the detector's
// quiet_period (the resolve bound is quiet_period plus two windows of the
// episode's scale).
func Score(tr *Truth, eps []anomaly.Episode, quiet time.Duration) *Report {
	cfg := tr.Config
	from := cfg.Start.Add(time.Duration(cfg.WarmupDays) * 24 * time.Hour)
	to := cfg.Start.Add(time.Duration(cfg.Days) * 24 * time.Hour)
	days := to.Sub(from).Hours() / 24
	rate := map[string]float64{}
	rep := &Report{Tenants: len(tr.Tenants), ByMetric: map[string]int{}}
	for i := range rep.Band {
		rep.Band[i].Scales = map[string]int{}
	}
	for _, t := range tr.Tenants {
		rate[t.ID] = t.Rate
		b := &rep.Band[bandOf(t.Rate)]
		b.Tenants++
		b.TenantDays += days
	}
	rep.TenantDays = float64(len(tr.Tenants)) * days
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
	delays := make([][]float64, len(Bands))
	resolves := make([][]float64, len(Bands))
	for _, in := range tr.Injections {
		if in.Type == InjShift {
			continue
		}
		hit := false
		var first *anomaly.Episode
		for _, i := range byTenant[in.Tenant] {
			e := &eps[i]
			if !contains(metricOf[in.Type], e.Metric) {
				continue
			}
			end := to
			if e.EndsAt != nil {
				end = *e.EndsAt
			}
			// Overlap with the injection, allowing the detector to start
			// a little early (change point) and to resolve late.
			if e.DetectedAt.Before(in.Start) || !e.StartsAt.Before(in.End.Add(10*time.Minute)) || !end.After(in.Start) {
				continue
			}
			matched[i] = true
			if e.Metric == metricOf[in.Type][0] && e.DetectedAt.Before(in.End.Add(10*time.Minute)) {
				if !hit || e.DetectedAt.Before(first.DetectedAt) {
					first = e
				}
				hit = true
			}
		}
		// Late follow-ups of the same incident also count as matched.
		for _, i := range byTenant[in.Tenant] {
			e := eps[i]
			if contains(metricOf[in.Type], e.Metric) && !e.StartsAt.Before(in.Start.Add(-10*time.Minute)) && e.StartsAt.Before(in.End.Add(70*time.Minute)) {
				matched[i] = true
			}
		}
		bi := bandOf(rate[in.Tenant])
		b := &rep.Band[bi]
		switch in.Type {
		case InjSpike:
			b.Spikes++
			if hit {
				b.Hit++
				delays[bi] = append(delays[bi], first.DetectedAt.Sub(in.Start).Minutes())
				scale := first.Scale
				if scale == "" {
					scale = "1m"
				}
				b.Scales[scale]++
				b.scoreResolve(eps, byTenant[in.Tenant], in, to, quiet, &resolves[bi])
			}
		case InjLatency:
			// >= 50 samples per window: the trough of the day must clear it.
			if tt := tenantByID(tr, in.Tenant); tt != nil && tt.Rate*(1-tt.dayAmp)*tt.weekend >= 50 {
				rep.LatDoubling++
				rep.LatHit += b2i(hit)
			}
		case InjErrors:
			if rate[in.Tenant] >= GoalRate {
				rep.ErrBursts++
				rep.ErrHit += b2i(hit)
			}
		}
	}
	for i := range rep.Band {
		rep.Band[i].Delay = quantiles(delays[i])
		rep.Band[i].Resolve = quantiles(resolves[i])
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
			rep.Band[bandOf(rate[e.TenantID])].False++
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
	sort.Slice(rep.False, func(i, j int) bool { return rep.False[i].DetectedAt.Before(rep.False[j].DetectedAt) })
	return rep
}

// scoreResolve looks at the usage and cost episodes of a hit spike in:
// when the last usage episode resolved after the spike's end, how many
// resolved while the spike still ran and how many fired again.
func (b *BandReport) scoreResolve(eps []anomaly.Episode, idxs []int, in Injection, to time.Time, quiet time.Duration, resolves *[]float64) {
	for _, metric := range []string{anomaly.MetricUsage, anomaly.MetricCost} {
		var last *anomaly.Episode
		n := 0
		for _, i := range idxs {
			e := &eps[i]
			if e.Metric != metric || e.DetectedAt.Before(in.Start) || !e.StartsAt.Before(in.End.Add(10*time.Minute)) {
				continue
			}
			if e.ResolvedAt != nil && !e.ResolvedAt.After(in.Start) {
				continue
			}
			n++
			if e.ResolvedAt != nil && e.ResolvedAt.Before(in.End) {
				b.MidSpike++
			}
			if last == nil || e.StartsAt.After(last.StartsAt) {
				last = e
			}
		}
		if n > 1 {
			b.Refires += n - 1
		}
		switch {
		case last == nil:
		case last.ResolvedAt == nil:
			if in.End.Add(2 * time.Hour).Before(to) {
				b.StillFiring++
			}
		case metric == anomaly.MetricUsage:
			lag := last.ResolvedAt.Sub(in.End).Minutes()
			*resolves = append(*resolves, lag)
			if lag > quiet.Minutes()+2*ScaleMinutes(last.Scale) {
				b.LateResolves++
			}
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
	fmt.Fprintf(w, "tenants %d, %.0f scored tenant-days, %d rows replayed in %s\n",
		r.Tenants, r.TenantDays, r.Rows, r.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "recall, 3x spikes (30 min-4 h), tenants >= 1/min: %.3f  goal >= %.2f  %s\n", r.Recall(), GoalRecall, ok(r.Recall() >= GoalRecall))
	fmt.Fprintf(w, "false alerts per tenant-day:  %.5f (%d)  goal <= %g  %s\n", r.FalsePerTenantDay(), r.FalseAlerts(), GoalFalsePerDay, ok(r.FalsePerTenantDay() <= GoalFalsePerDay))
	fmt.Fprintf(w, "alerts after +30%% level shifts: %d  goal 0  %s\n", r.ShiftAlerts, ok(r.ShiftAlerts == 0))
	fmt.Fprintf(w, "false alerts on weekends/Mon a.m.: %d\n", r.WeekendAlerts)
	fmt.Fprintf(w, "recall, P95 doubling (>= 50/window): %.3f (%d/%d)  goal >= %.2f  %s\n", r.LatRecall(), r.LatHit, r.LatDoubling, GoalLatRecall, ok(r.LatRecall() >= GoalLatRecall))
	fmt.Fprintf(w, "recall, error-rate bursts to 10%% (>= 1/min): %.3f (%d/%d)  (no goal)\n", ratio(r.ErrHit, r.ErrBursts), r.ErrHit, r.ErrBursts)
	fmt.Fprintf(w, "precision, all episodes: %.3f (%d/%d)\n", r.Precision(), r.TruePos, r.Episodes)
	fmt.Fprintf(w, "%-13s %7s %14s %16s %18s %22s %9s %8s %7s  %s\n", "events/min", "tenants", "recall", "false/tenant-day", "delay med/p90 (min)", "resolve after end med/p90/max", "late res.", "mid-res.", "refires", "fired on scale")
	for i := range r.Band {
		b := &r.Band[i]
		goal := ""
		switch {
		case i == 1:
			goal = fmt.Sprintf(" (goal <= %g %s)", GoalDelaySmall, ok(b.Delay.Median <= GoalDelaySmall))
		case i >= 2:
			goal = fmt.Sprintf(" (goal <= %g %s)", GoalDelayBusy, ok(b.Delay.Median <= GoalDelayBusy))
		}
		scales := make([]string, 0, len(b.Scales))
		for s, n := range b.Scales {
			scales = append(scales, fmt.Sprintf("%s:%d", s, n))
		}
		sort.Slice(scales, func(i, j int) bool {
			return ScaleMinutes(strings.Split(scales[i], ":")[0]) < ScaleMinutes(strings.Split(scales[j], ":")[0])
		})
		fmt.Fprintf(w, "%-13s %7d %6.3f (%3d/%3d) %9.5f (%2d) %8.1f / %5.1f%s %7.1f / %5.1f / %5.0f %9d %8d %7d  %s\n",
			Bands[i].Name, b.Tenants, b.Recall(), b.Hit, b.Spikes, b.FalsePerTenantDay(), b.False,
			b.Delay.Median, b.Delay.P90, goal, b.Resolve.Median, b.Resolve.P90, b.Resolve.Max, b.LateResolves, b.MidSpike, b.Refires, strings.Join(scales, " "))
	}
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
