package advisor

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/tenantguard/tenantguard/collector/store"
)

// Source reads tenants' hourly use of the pooled resources;
// *store.Store is one.
type Source interface {
	TenantHours(ctx context.Context, from, to time.Time, fn func(store.TenantHour) error) error
}

var _ Source = (*store.Store)(nil)

// Pooled resources, in the order every Advice lists them.
const (
	ResourceEvents         = "events"          // events of every kind
	ResourceCost           = "cost"            // cost from the price book
	ResourceDBQueryMs      = "db_query_ms"     // sum of latency_ms of db_query events
	ResourceComputeSeconds = "compute_seconds" // quantity of compute_seconds events
)

// resources names the pooled resources in report order.
var resources = [nres]string{ResourceEvents, ResourceCost, ResourceDBQueryMs, ResourceComputeSeconds}

const nres = 4

// Recommendations.
const (
	MoveToDedicated = "move_to_dedicated" // over the share in at least advisor.sustained of the hours
	Watch           = "watch"             // over it in at least advisor.watch of the hours, or trending up
	None            = "none"
)

// Trends of a resource's share: the recent span against the whole range.
const (
	TrendUp   = "up"
	TrendDown = "down"
	TrendFlat = "flat"
)

// ErrRange is returned for a range that is empty, reversed or longer than
// MaxRange.
var ErrRange = errors.New("bad range")

// Thresholds are the settings a report was judged with.
type Thresholds struct {
	Share       float64 `json:"share"`
	Sustained   float64 `json:"sustained"`
	Watch       float64 `json:"watch"`
	TrendFactor float64 `json:"trend_factor"`
}

// Report is the advice over one range of whole hours. Its JSON is the
// output of `tenantguard advise --format json` and GET /api/v1/advice,
// documented in docs/advisor.md.
type Report struct {
	From       time.Time          `json:"from"`       // inclusive, on the hour
	To         time.Time          `json:"to"`         // exclusive, on the hour
	Hours      int                `json:"hours"`      // hours in [from, to)
	TrendFrom  time.Time          `json:"trend_from"` // start of the recent span the trend compares
	Thresholds Thresholds         `json:"thresholds"`
	Pool       map[string]float64 `json:"pool"`  // every tenant's use over the range, per resource
	Heavy      int                `json:"heavy"` // tenants advised to move to dedicated
	Watched    int                `json:"watch"` // tenants to watch
	// Tenants lists every tenant that used a pooled resource in the range:
	// move_to_dedicated first, then watch, then none; within each the
	// most hours over the share first.
	Tenants []Advice `json:"tenants"`
}

// Advice is one tenant's recommendation and the figures behind it.
type Advice struct {
	TenantID       string `json:"tenant_id"`
	Recommendation string `json:"recommendation"` // move_to_dedicated, watch or none
	// Resource is the resource the recommendation rests on ("" for none).
	Resource string `json:"resource"`
	// Reason states the recommendation with its figures.
	Reason string `json:"reason"`
	// Resources has one entry per pooled resource, always in the order
	// events, cost, db_query_ms, compute_seconds.
	Resources []Usage `json:"resources"`
}

// Usage is a tenant's share of one pooled resource.
type Usage struct {
	Resource string  `json:"resource"`
	Used     float64 `json:"used"`  // the tenant's use over the range
	Share    float64 `json:"share"` // of the pool over the range, 0..1
	// HoursOver counts the hours in which the tenant's share of the hour's
	// pool exceeded advisor.share; HoursOverFraction divides by the
	// range's hours (hours with an empty pool count as not over).
	HoursOver         int     `json:"hours_over"`
	HoursOverFraction float64 `json:"hours_over_fraction"`
	MaxHourShare      float64 `json:"max_hour_share"` // highest hourly share
	RecentShare       float64 `json:"recent_share"`   // share of the pool in [trend_from, to)
	Trend             string  `json:"trend"`          // up, down or flat
}

// AlignRange widens [from, to) to whole hours: from down and to up.
func AlignRange(from, to time.Time) (time.Time, time.Time) {
	from, to = from.UTC().Truncate(time.Hour), to.UTC()
	if t := to.Truncate(time.Hour); !t.Equal(to) {
		to = t.Add(time.Hour)
	}
	return from, to
}

// LastWindow is the default range at now: advisor.window of complete
// hours, ending at the start of the current hour.
func (c Config) LastWindow(now time.Time) (from, to time.Time) {
	to = now.UTC().Truncate(time.Hour)
	return to.Add(-c.Window), to
}

// tally accumulates one tenant's figures.
type tally struct {
	used, recent [nres]float64
	over         [nres]int
	maxShare     [nres]float64
}

// Report judges every tenant over [from, to), widened to whole hours.
func (c Config) Report(ctx context.Context, src Source, from, to time.Time) (Report, error) {
	from, to = AlignRange(from, to)
	if !to.After(from) || to.Sub(from) > MaxRange {
		return Report{}, fmt.Errorf("%w: from %s to %s must be a non-empty range of at most %s",
			ErrRange, from.Format(time.RFC3339), to.Format(time.RFC3339), MaxRange)
	}
	r := Report{From: from, To: to, Hours: int(to.Sub(from) / time.Hour),
		TrendFrom:  to.Add(-c.Trend),
		Thresholds: Thresholds{Share: c.Share, Sustained: c.Sustained, Watch: c.Watch, TrendFactor: c.TrendFactor},
		Pool:       map[string]float64{}, Tenants: []Advice{}}
	if r.TrendFrom.Before(from) {
		r.TrendFrom = from
	}
	tallies := map[string]*tally{}
	var pool, recentPool [nres]float64
	var hour []store.TenantHour
	flush := func() {
		if len(hour) == 0 {
			return
		}
		var sum [nres]float64
		for _, h := range hour {
			v := amounts(h)
			for i := range v {
				sum[i] += v[i]
			}
		}
		recent := !hour[0].Hour.Before(r.TrendFrom)
		for _, h := range hour {
			t := tallies[h.TenantID]
			if t == nil {
				t = &tally{}
				tallies[h.TenantID] = t
			}
			v := amounts(h)
			for i := range v {
				t.used[i] += v[i]
				if recent {
					t.recent[i] += v[i]
				}
				if sum[i] > 0 {
					s := v[i] / sum[i]
					t.maxShare[i] = max(t.maxShare[i], s)
					if s > c.Share {
						t.over[i]++
					}
				}
			}
		}
		for i := range sum {
			pool[i] += sum[i]
			if recent {
				recentPool[i] += sum[i]
			}
		}
		hour = hour[:0]
	}
	err := src.TenantHours(ctx, from, to, func(h store.TenantHour) error {
		if len(hour) > 0 && !h.Hour.Equal(hour[0].Hour) {
			flush()
		}
		hour = append(hour, h)
		return nil
	})
	if err != nil {
		return Report{}, err
	}
	flush()
	for i, name := range resources {
		r.Pool[name] = pool[i]
	}
	for tenant, t := range tallies {
		a := c.judge(tenant, t, pool, recentPool, r.Hours)
		switch a.Recommendation {
		case MoveToDedicated:
			r.Heavy++
		case Watch:
			r.Watched++
		}
		r.Tenants = append(r.Tenants, a)
	}
	sort.Slice(r.Tenants, func(i, j int) bool { return before(r.Tenants[i], r.Tenants[j]) })
	return r, nil
}

// amounts are h's uses in resource order; a negative or non-finite
// amount (a correction gone wrong) counts as none.
func amounts(h store.TenantHour) [nres]float64 {
	v := [nres]float64{float64(h.Events), h.Cost, h.DBQueryMs, h.ComputeSeconds}
	for i := range v {
		if !(v[i] > 0) || math.IsInf(v[i], 0) {
			v[i] = 0
		}
	}
	return v
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

// judge turns a tenant's tally into its advice.
func (c Config) judge(tenant string, t *tally, pool, recentPool [nres]float64, hours int) Advice {
	a := Advice{TenantID: tenant, Recommendation: None, Resources: make([]Usage, nres)}
	best, bestRank := -1, 0
	for i, name := range resources {
		u := Usage{Resource: name, Used: t.used[i], Share: ratio(t.used[i], pool[i]), HoursOver: t.over[i],
			HoursOverFraction: float64(t.over[i]) / float64(hours), MaxHourShare: t.maxShare[i],
			RecentShare: ratio(t.recent[i], recentPool[i]), Trend: TrendFlat}
		switch {
		case recentPool[i] == 0:
		case u.RecentShare >= c.TrendFactor*u.Share && u.RecentShare >= c.Share/2:
			u.Trend = TrendUp
		case u.RecentShare <= u.Share/c.TrendFactor:
			u.Trend = TrendDown
		}
		a.Resources[i] = u
		rank := 0
		switch {
		case u.HoursOverFraction >= c.Sustained:
			rank = 2
		case u.HoursOverFraction >= c.Watch || u.Trend == TrendUp:
			rank = 1
		}
		if rank > 0 && (best < 0 || rank > bestRank || rank == bestRank && u.HoursOver > a.Resources[best].HoursOver) {
			best, bestRank = i, rank
		}
	}
	if best < 0 {
		return a
	}
	u := a.Resources[best]
	a.Resource = u.Resource
	a.Recommendation = Watch
	if bestRank == 2 {
		a.Recommendation = MoveToDedicated
	}
	a.Reason = fmt.Sprintf("%s: over %s of the pool in %d of %d hours (%s); %s of the pool over the range, %s in the recent span (%s)",
		u.Resource, pct(c.Share), u.HoursOver, hours, pct(u.HoursOverFraction), pct(u.Share), pct(u.RecentShare), u.Trend)
	return a
}

func pct(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) }

// strength orders recommendations, strongest first.
func strength(rec string) int {
	switch rec {
	case MoveToDedicated:
		return 0
	case Watch:
		return 1
	}
	return 2
}

// before orders advice: stronger recommendation, more hours over, larger
// share, then tenant id.
func before(a, b Advice) bool {
	if strength(a.Recommendation) != strength(b.Recommendation) {
		return strength(a.Recommendation) < strength(b.Recommendation)
	}
	ha, hb, sa, sb := 0, 0, 0.0, 0.0
	for _, u := range a.Resources {
		ha, sa = max(ha, u.HoursOver), max(sa, u.Share)
	}
	for _, u := range b.Resources {
		hb, sb = max(hb, u.HoursOver), max(sb, u.Share)
	}
	if ha != hb {
		return ha > hb
	}
	if sa != sb {
		return sa > sb
	}
	return a.TenantID < b.TenantID
}
