package anomaly

import (
	"context"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// TestRingWindows checks the long windows built from block sums against
// sums over the raw minutes: the last 5 minutes, the 5-minute block being
// filled and the two before it, the 15-minute block being filled and the
// three before it; and that a window's parts add up to it.
func TestRingWindows(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var rg ring
	vals := map[int32]float64{}
	sum := func(from, to int32) float64 {
		var s float64
		for m := from; m <= to; m++ {
			s += vals[m]
		}
		return s
	}
	const first = 1_000_003 // not aligned to a block
	for m := int32(first); m < first+400; m++ {
		v := float64(r.IntN(50))
		vals[m] = v
		rg.push(posOf(m), float32(v))
		var got [numScales]float64
		rg.sums(posOf(m), &got)
		b, c := floorDiv(m, 5), floorDiv(m, 15)
		want := [numScales]float64{0, sum(m-4, m), sum(5*(b-2), m), sum(15*(c-3), m)}
		lens := [numScales]int32{1, 5, m - 5*(b-2) + 1, m - 15*(c-3) + 1}
		for i := uint8(1); i < numScales; i++ {
			if m-first < 60 {
				continue // the windows still reach back before the first minute
			}
			if math.Abs(got[i]-want[i]) > 1e-3 {
				t.Fatalf("minute %d, scale %s: sum %.0f, want %.0f", m, scaleLabel(i), got[i], want[i])
			}
			if n := windowLen(i, m); n != lens[i] {
				t.Fatalf("minute %d, scale %s: length %d, want %d", m, scaleLabel(i), n, lens[i])
			}
			var parts [5]float64
			var ns [5]int32
			k := rg.parts(i, posOf(m), &parts, &ns)
			var ps float64
			var pn int32
			for j := 0; j < k; j++ {
				ps += parts[j]
				pn += ns[j]
			}
			if math.Abs(ps-got[i]) > 1e-3 || pn != lens[i] {
				t.Fatalf("minute %d, scale %s: parts add up to %.0f over %d minutes, want %.0f over %d", m, scaleLabel(i), ps, pn, got[i], lens[i])
			}
		}
	}
}

// smallTenantRun feeds 8 days of seasonal, over-dispersed per-minute
// rollups to a detector (the profile needs a day, the long windows need
// it), with a 3x spike of the small tenant and of the busy one, and
// evaluates each minute as replay does.
type smallTenantRun struct {
	cfg        Config
	rate       float64 // the small tenant's mean events per minute
	spikeStart int     // minute
	spikeLen   int     // minutes
	seed       uint64
}

func (st smallTenantRun) run(t *testing.T) *clockSink {
	t.Helper()
	sink := &clockSink{}
	d, err := New(st.cfg, sink)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(st.seed, 11))
	tenants := []struct {
		id   string
		rate float64
	}{{"small", st.rate}, {"busy", 300}, {"steady", st.rate}}
	ctx := context.Background()
	end := st.spikeStart + st.spikeLen + 180
	for m := 0; m < end; m++ {
		at := t0.Add(time.Duration(m) * time.Minute)
		for _, tn := range tenants {
			mu := tn.rate * (1 + 0.5*math.Sin(2*math.Pi*float64(m%1440)/1440))
			if tn.id != "steady" && m >= st.spikeStart && m < st.spikeStart+st.spikeLen {
				mu *= 3
			}
			// Over-dispersed: a gamma-distributed rate (shape 20) per minute.
			n := uint64(poisson(r, mu*gammaShape20(r)))
			d.ObserveRollup(&Rollup{Minute: at, TenantID: tn.id, Kind: "api_request", Count: n, Quantity: float64(n), Cost: float64(n) * 0.01})
		}
		sink.now = at.Add(time.Minute)
		d.Advance(ctx, at.Add(time.Minute+d.cfg.Lateness))
	}
	return sink
}

// gammaShape20 draws Gamma(20, 1/20) as a sum of exponentials.
func gammaShape20(r *rand.Rand) float64 {
	var s float64
	for range 20 {
		s += r.ExpFloat64()
	}
	return s / 20
}

// TestSmallTenantFiresOnLongWindow: a tenant at 2 events/min (0.5-3 over
// the day) that triples for three hours has no minute big enough for the
// test, but its 5 to 60-minute windows are: it fires once per metric, on a
// long scale that the alert carries, within 30 minutes (40 in its quiet
// hours, about 1 event/min), and resolves
// within quiet_period plus two windows of that scale after the spike,
// never before its end and without firing again. A busy tenant tripling
// at the same time still fires on 1-minute windows within 2 minutes; a
// steady small tenant never alerts. Several seeds and spike starts.
func TestSmallTenantFiresOnLongWindow(t *testing.T) {
	cfg := DefaultConfig()
	// Spikes starting at midday, in the evening trough and in the morning.
	for i, start := range []int{8*1440 - 600, 8*1440 - 300, 8*1440 - 1000} {
		t.Run(fmt.Sprintf("start%d", i), func(t *testing.T) {
			st := smallTenantRun{cfg: cfg, rate: 2, spikeStart: start, spikeLen: 180, seed: uint64(i + 1)}
			sink := st.run(t)
			spikeAt := t0.Add(time.Duration(start) * time.Minute)
			spikeEnd := spikeAt.Add(180 * time.Minute)
			eps := episodesOf(sink, "small")
			if len(eps) != 2 {
				t.Fatalf("small: %d episodes %+v, want 2 (usage and cost)", len(eps), eps)
			}
			for _, ep := range eps {
				scale, err := time.ParseDuration(ep.scale)
				if err != nil || scale < 5*time.Minute {
					t.Errorf("small %s: scale %q, want a long window", ep.metric, ep.scale)
					continue
				}
				delay := ep.fired.Sub(spikeAt)
				lag := ep.resolved.Sub(spikeEnd)
				t.Logf("small %s: fired on %s windows %s after the spike started (%.2f vs %.2f), resolved %s after it ended",
					ep.metric, ep.scale, delay, ep.observed, ep.baseline, lag)
				limit := 30 * time.Minute
				if i == 1 {
					limit = 40 * time.Minute // the evening trough
				}
				if delay < 0 || delay > limit {
					t.Errorf("small %s: fired %s after the spike started, want within %s", ep.metric, delay, limit)
				}
				if ep.resolved.IsZero() || lag < 0 || lag > cfg.QuietPeriod+2*scale {
					t.Errorf("small %s: resolved %s after the spike ended (zero: still firing), want within %s", ep.metric, lag, cfg.QuietPeriod+2*scale)
				}
			}
			busy := episodesOf(sink, "busy")
			if len(busy) != 2 {
				t.Fatalf("busy: %d episodes, want 2", len(busy))
			}
			for _, ep := range busy {
				if ep.scale != "1m" || ep.fired.Sub(spikeAt) > 2*time.Minute {
					t.Errorf("busy %s: fired on %s windows %s after the spike, want 1m within 2m", ep.metric, ep.scale, ep.fired.Sub(spikeAt))
				}
			}
			if eps := episodesOf(sink, "steady"); len(eps) > 0 {
				t.Errorf("steady small tenant alerted: %+v", eps)
			}
			checkSameLabels(t, sink.alerts)
		})
	}
}

// checkSameLabels asserts that the resolved alert of each episode carries
// the labels of its firing alert: Alertmanager identifies an alert by its
// labels, so a resolve with other labels leaves the firing alert open.
func checkSameLabels(t *testing.T, alerts []Alert) {
	t.Helper()
	firing := map[string]map[string]string{}
	for _, a := range alerts {
		if a.Status == StatusFiring {
			firing[a.Fingerprint] = a.Labels
			continue
		}
		if f, ok := firing[a.Fingerprint]; ok && !maps.Equal(f, a.Labels) {
			t.Errorf("%s %s: resolved with labels %v, fired with %v", a.TenantID, a.Metric, a.Labels, f)
		}
	}
}

// TestLongWindowsOff: with scales.enabled false every episode is on
// 1-minute windows, and the busy tenant fires as before.
func TestLongWindowsOff(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Scales.Enabled = false
	st := smallTenantRun{cfg: cfg, rate: 2, spikeStart: 8*1440 - 600, spikeLen: 180, seed: 1}
	sink := st.run(t)
	for _, a := range sink.alerts {
		if a.Labels[LabelScale] != "1m" {
			t.Errorf("%s %s %s on %s windows, want 1m", a.TenantID, a.Metric, a.Status, a.Labels[LabelScale])
		}
	}
	if eps := episodesOf(sink, "busy"); len(eps) != 2 {
		t.Errorf("busy tenant: %d episodes, want 2", len(eps))
	}
}

// TestDispersionGrowsWithRate: a busy series whose noise grows with its
// rate (a gamma-distributed rate of shape 10 per minute, var = mu +
// mu^2/10) through a daily cycle from 60 to 540 events/min. At the peak
// the dispersion must be the rate-proportional one (about 55), where one
// var/mean number learned over the day is about half of it (the
// Monday-morning false alerts); in the trough it must not be lower than
// the rate-proportional one either.
func TestDispersionGrowsWithRate(t *testing.T) {
	p := newCountParams(&Config{
		RatioFraction: 0.7, ResolveRatio: 0.5, Significance: 13.5, KWindows: 2, QuietPeriod: 5 * time.Minute,
		Cooldown: 10 * time.Minute, MaxEpisode: 12 * time.Hour, WarmupWindows: 60, BaselineHalfLife: time.Hour,
	}, 3)
	r := rand.New(rand.NewPCG(3, 4))
	var s series
	s.level = 300
	for m := 0; m < 3*1440; m++ {
		idx := 1 + 0.8*math.Sin(2*math.Pi*float64(m)/1440)
		mu := 300 * idx
		g := 0.0
		for range 10 {
			g += r.ExpFloat64()
		}
		x := float64(poisson(r, mu*g/10))
		s.learnCount(x, float64(s.level)*idx, idx, 1, false, &p)
	}
	peak, trough := s.phi(540, 1, &p), s.phi(60, 1, &p)
	t.Logf("dispersion at 540 events/min %.1f (model 55), at 60 %.1f (model 7), one var/mean %.1f", peak, trough, s.dispQ)
	if peak < 0.8*55 || peak > 1.25*55 {
		t.Errorf("dispersion at 540 events/min: got %.1f, want about 55", peak)
	}
	if trough < 0.8*7 {
		t.Errorf("dispersion at 60 events/min: got %.1f, want >= about 7", trough)
	}
}

// TestNoEvidenceBound: a window at noEvidence x its expected count has a
// ratio <= 0 whatever its dispersion, for ratio tests from 1.2 to 7 (the
// 1-minute path skips computing it there).
func TestNoEvidenceBound(t *testing.T) {
	for _, r := range []float64{1.2, 1.5, 2.1, 3, 7} {
		p := countParams{minRatio: r, lnRho: math.Log(r), rhoM1: r - 1, noEvidence: 0.99 * r * math.Log(r) / (r - 1)}
		for ex := 1e-5; ex < 1e6; ex *= 1.3 {
			for _, unit := range []float64{1, 0.002, 500} {
				if l := p.llr(p.noEvidence*100*unit, 100*unit, (1+ex)*unit, unit); l > 0 {
					t.Errorf("ratio test %.1f, extra dispersion %.3g, unit %g: ratio %.4g at the bound, want <= 0", r, ex, unit, l)
				}
			}
		}
	}
}
