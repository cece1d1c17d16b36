package anomaly

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
)

// clockSink records each alert with the evaluation time that produced it.
type clockSink struct {
	now    time.Time
	alerts []Alert
	at     []time.Time
}

func (s *clockSink) Send(_ context.Context, a Alert) {
	s.alerts = append(s.alerts, a)
	s.at = append(s.at, s.now)
}

// poisson draws a Poisson variate (Knuth below 30, normal above).
func poisson(r *rand.Rand, lambda float64) int {
	if !(lambda > 0) {
		return 0
	}
	if lambda >= 30 {
		return max(0, int(math.Round(lambda+math.Sqrt(lambda)*r.NormFloat64())))
	}
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= r.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// TestFastPathDetectsWithin60s drives the detector as the daemon does
// (events through Observe, Advance every eval_interval on the detector's
// clock) with DEFAULT config: tenants at 10 events/s learn for 3 hours,
// then each goes to 5x at a different second of the minute. Every spike
// must fire a usage alert (and a cost alert) within 60 s of its start,
// with observed, baseline and ratio in the metric's unit; a steady tenant
// must stay quiet.
func TestFastPathDetectsWithin60s(t *testing.T) {
	const (
		rate   = 10.0 // events per second
		factor = 5.0
		price  = 0.001 // cost per event
	)
	offsets := []int{0, 9, 21, 30, 38, 44, 52, 59} // spike start, seconds into the minute
	for _, phase := range []int{0, 3, 7} {         // where the 10 s evaluation clock ticks
		t.Run(fmt.Sprintf("tick+%ds", phase), func(t *testing.T) {
			sink := &clockSink{}
			cfg := DefaultConfig()
			d, err := New(cfg, sink)
			if err != nil {
				t.Fatal(err)
			}
			r := rand.New(rand.NewPCG(uint64(phase), 99))
			learn := 3 * time.Hour
			spikeAt := map[string]time.Time{}
			for i, off := range offsets {
				spikeAt[fmt.Sprintf("spiky-%d", i)] = t0.Add(learn + time.Duration(i*5)*time.Minute + time.Duration(off)*time.Second)
			}
			end := t0.Add(learn + time.Duration(len(offsets)*5+3)*time.Minute)
			tenants := append([]string{"steady"}, mapKeys(spikeAt)...)
			e := event.Event{Kind: "api_request", Quantity: 1}
			ctx := context.Background()
			every := cfg.EvalInterval
			next := t0.Add(every + time.Duration(phase)*time.Second)
			for sec := t0; sec.Before(end); sec = sec.Add(time.Second) {
				for _, id := range tenants {
					lambda := rate
					if s, ok := spikeAt[id]; ok && !sec.Before(s) && sec.Before(s.Add(3*time.Minute)) {
						lambda *= factor
					}
					n := poisson(r, lambda)
					e.TenantID = id
					for j := 0; j < n; j++ {
						e.Time = sec.Add(time.Duration(j) * time.Second / time.Duration(n))
						d.Observe(&e, price)
					}
				}
				if now := sec.Add(time.Second); !now.Before(next) {
					sink.now = now
					d.Advance(ctx, now)
					next = next.Add(every)
				}
			}
			for id, start := range spikeAt {
				var usage, cost *Alert
				var usageAt time.Time
				for i := range sink.alerts {
					a := &sink.alerts[i]
					if a.TenantID != id || a.Status != StatusFiring {
						continue
					}
					switch {
					case a.Metric == MetricUsage && usage == nil:
						usage, usageAt = a, sink.at[i]
					case a.Metric == MetricCost && cost == nil:
						cost = a
					}
				}
				if usage == nil || cost == nil {
					t.Fatalf("%s: usage alert %v, cost alert %v; want both", id, usage != nil, cost != nil)
				}
				delay := usageAt.Sub(start)
				t.Logf("%s: spike at :%02d, usage alert after %s (observed %.0f/min, baseline %.0f/min, ratio %.1f)",
					id, start.Second(), delay, usage.Observed, usage.Baseline, usage.Ratio)
				if delay <= 0 || delay > 60*time.Second {
					t.Errorf("%s: detected %s after the spike started, want within 60s", id, delay)
				}
				// Units: usage per minute, cost per hour.
				if b := usage.Baseline; b < 0.8*rate*60 || b > 1.2*rate*60 {
					t.Errorf("%s: usage baseline %.0f/min, want about %.0f", id, b, rate*60)
				}
				if usage.Ratio < 2.1 || usage.Ratio > 6 || math.Abs(usage.Observed-usage.Ratio*usage.Baseline) > 1e-6*usage.Observed {
					t.Errorf("%s: usage observed %.0f, ratio %.2f over baseline %.0f; want a ratio between 2.1 and 6", id, usage.Observed, usage.Ratio, usage.Baseline)
				}
				if b := cost.Baseline; b < 0.8*rate*3600*price || b > 1.2*rate*3600*price {
					t.Errorf("%s: cost baseline %.2f/h, want about %.2f", id, b, rate*3600*price)
				}
				if cost.Ratio < 2.1 {
					t.Errorf("%s: cost ratio %.2f, want >= 2.1", id, cost.Ratio)
				}
				if want := start.Truncate(time.Minute); usage.StartsAt.Before(want.Add(-time.Minute)) || usage.StartsAt.After(want.Add(time.Minute)) {
					t.Errorf("%s: starts_at %s, want about %s", id, usage.StartsAt, want)
				}
			}
			for _, a := range sink.alerts {
				if a.TenantID == "steady" {
					t.Errorf("steady tenant alerted: %+v", a)
				}
			}
			if n := d.Stats().FastAlerts; n < uint64(len(offsets)) {
				t.Errorf("fast path fired %d alerts, want >= %d (one usage alert per spike at least)", n, len(offsets))
			}
		})
	}
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestFastPathOff checks that disabling the fast path leaves the k-window
// path as it was: the same 5x spike then fires one closed window later.
func TestFastPathOff(t *testing.T) {
	firedAfter := map[bool]int{}
	for _, enabled := range []bool{true, false} {
		d, rec := newTestDetector(t, func(c *Config) { c.FastPath.Enabled = enabled })
		ctx := context.Background()
		for m := 0; m < 200 && firedAfter[enabled] == 0; m++ {
			n := uint64(600 + m%7)
			if m >= 150 {
				n *= 5
			}
			at := t0.Add(time.Duration(m) * time.Minute)
			d.ObserveRollup(&Rollup{Minute: at, TenantID: "acme", Kind: "api_request", Count: n})
			d.Advance(ctx, at.Add(time.Minute+d.cfg.Lateness))
			if got := only(rec.Alerts(), MetricUsage); len(got) > 0 {
				firedAfter[enabled] = m
				if !got[0].StartsAt.Equal(t0.Add(150 * time.Minute)) {
					t.Errorf("fast path %v: starts_at %s, want minute 150", enabled, got[0].StartsAt)
				}
			}
		}
	}
	if firedAfter[true] != 150 || firedAfter[false] != 151 {
		t.Errorf("fired when minute %d closed with the fast path and %d without; want 150 and 151 (k=2)", firedAfter[true], firedAfter[false])
	}
}
