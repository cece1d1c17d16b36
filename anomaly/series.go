package anomaly

import "math"

// series is the state of one detector on one tenant (44 bytes). Every
// detector shares this state machine: an evidence test per window, k
// anomalous windows in a row to fire, a quiet period of windows in a row
// each below the resolve ratio to resolve, then a cool-down.
type series struct {
	level    float32 // baseline: deseasonalized mean per window (counts) or mean ln value (latency)
	disp     float32 // dispersion var/mean (counts) or variance of ln (latency)
	cusum    float32 // quasi-Poisson CUSUM statistic (counts)
	segObs   float32 // observed since the CUSUM segment started; smoothed observed while firing
	segExp   float32 // expected since the CUSUM segment started; smoothed expected while firing
	obs      float32 // observed reported in the alert
	base     float32 // baseline reported in the alert
	segStart int32   // minute the CUSUM segment started
	start    int32   // minute the episode started
	n        uint16  // windows learned
	cool     uint8   // windows left in the cool-down
	run      uint8   // anomalous windows in a row
	quiet    uint8   // quiet windows in a row, while firing
	firing   bool
}

// transition of a series after one window.
type transition int8

const (
	none transition = iota
	fired
	resolved
	firedFast // fired by the fast path (one window)
)

// countParams parameterizes the count detector for one metric and plan.
type countParams struct {
	factor     float64 // design factor, for severity
	minRatio   float64 // ratio test
	lnRho      float64 // CUSUM alternative: ln(minRatio)
	rhoM1      float64 // minRatio - 1
	h          float64 // CUSUM threshold
	fastH      float64 // single-window threshold of the fast path; 0: off
	winRatio   float64 // a window of a run must be at least this x baseline
	resolve    float64 // window ratio below which a firing window is quiet
	k          uint8
	quiet      uint8
	cooldown   uint8
	maxEpisode int32
	warm       uint16
	alpha      float64 // level EWMA weight
	alphaD     float64 // dispersion EWMA weight
}

func newCountParams(c *Config, factor float64) countParams {
	r := factor * c.RatioFraction
	return countParams{
		factor:     factor,
		minRatio:   r,
		lnRho:      math.Log(r),
		rhoM1:      r - 1,
		h:          c.Significance,
		fastH:      fastH(c),
		winRatio:   1 + (r-1)*runWindowFraction,
		resolve:    1 + (r-1)*c.ResolveRatio,
		k:          uint8(c.KWindows),
		quiet:      uint8(min(255, int(c.QuietPeriod/60e9))),
		cooldown:   uint8(min(255, int(c.Cooldown/60e9))),
		maxEpisode: int32(c.MaxEpisode / 60e9),
		warm:       uint16(c.WarmupWindows),
		alpha:      1 - math.Exp2(-60/c.BaselineHalfLife.Seconds()),
		alphaD:     1 - math.Exp2(-60/(4*c.BaselineHalfLife.Seconds())),
	}
}

// runWindowFraction sets how far toward the ratio test each window of a
// run must be on its own (1.66x for the 2.1x test): one outlier window
// cannot carry a run with a merely positive neighbour.
const runWindowFraction = 0.6

func fastH(c *Config) float64 {
	if !c.FastPath.Enabled {
		return 0
	}
	return c.FastPath.Significance
}

// fastLLR is the quasi-log-likelihood ratio of one window, or of the
// elapsed fraction f of an open one: x observed against mu*f expected,
// for the alternative minRatio x baseline. The dispersion is the one of a
// whole window, which overstates the noise of a partial window: the test
// stays conservative.
func (s *series) fastLLR(x, mu, f, unit float64, p *countParams) float64 {
	e := mu * f
	if e < 1e-9 || x < p.minRatio*e {
		return 0
	}
	phi := math.Max(float64(s.disp), unit)
	return (x*p.lnRho - e*p.rhoM1) / phi
}

// fireFast starts an episode at minute m from a single window (the fast
// path): obs is the window's observed rate extrapolated to a whole window,
// mu its expected value. A CUSUM run already open dates the start back.
func (s *series) fireFast(obs, mu float64, m int32) {
	s.firing, s.quiet = true, 0
	s.start = m
	if s.cusum > 0 && s.segStart < m {
		s.start = s.segStart
	}
	s.obs, s.base = float32(obs), float32(mu)
	s.cusum, s.segObs, s.segExp, s.run = 0, 0, 0, 0
}

// stepOpen runs the fast path on the open window of minute m, of which the
// fraction f has elapsed, with x observed so far. It never learns and
// never touches the CUSUM unless it fires.
func (s *series) stepOpen(x, mu, f, unit float64, eligible bool, m int32, p *countParams) transition {
	if p.fastH <= 0 || s.firing || s.cool > 0 || !eligible {
		return none
	}
	if s.fastLLR(x, mu, f, unit, p) < p.fastH {
		return none
	}
	s.fireFast(x/f, mu, m)
	return firedFast
}

// stepCount evaluates one closed window of a count-like series: x observed,
// mu expected, unit the smallest dispersion (mean quantity per event: 1 for
// counts). eligible is false below the minimum volume or during warm-up.
func (s *series) stepCount(x, mu, unit float64, eligible bool, m int32, p *countParams) transition {
	if mu < 1e-9 {
		mu = 1e-9
	}
	if s.firing {
		// The smoothed ratio only serves max_episode (the level adopted
		// when a long episode becomes the new normal).
		if s.segExp == 0 {
			s.segObs, s.segExp = float32(x), float32(mu)
		} else {
			s.segObs += 0.3 * (float32(x) - s.segObs)
			s.segExp += 0.3 * (float32(mu) - s.segExp)
		}
		// Quiet is judged on the window's own ratio, not a smoothed one:
		// once the rate is back, the quiet run starts with the first window
		// after the spike, and the episode resolves quiet_period later
		// (a smoothing would add its decay time, 3-10 windows after a 3-20x
		// spike). Hysteresis: the whole run must stay below p.resolve, so a
		// spike that dips for one window does not resolve.
		if x < p.resolve*mu {
			if s.quiet < 255 {
				s.quiet++
			}
		} else {
			s.quiet = 0
		}
		if s.quiet >= p.quiet {
			s.firing = false
			s.cusum, s.segObs, s.segExp, s.run = 0, 0, 0, 0
			s.cool = p.cooldown
			return resolved
		}
		if m-s.start >= p.maxEpisode {
			// A "spike" this long is the new normal: adopt it and resolve.
			if s.segExp > 0 {
				s.level *= s.segObs / s.segExp
			}
			s.firing = false
			s.cusum, s.segObs, s.segExp, s.run, s.quiet = 0, 0, 0, 0, 0
			s.cool = p.cooldown
			return resolved
		}
		return none
	}
	cooling := s.cool > 0
	if cooling {
		s.cool--
	}
	if !eligible {
		s.cusum, s.segObs, s.segExp, s.run = 0, 0, 0, 0
		return none
	}
	phi := math.Max(float64(s.disp), unit)
	llr := (x*p.lnRho - mu*p.rhoM1) / phi
	c := float64(s.cusum) + llr
	if c <= 0 {
		s.cusum, s.segObs, s.segExp = 0, 0, 0
	} else {
		if s.cusum == 0 {
			s.segStart = m
			s.segObs, s.segExp = 0, 0
		}
		s.cusum = float32(c)
		s.segObs += float32(x)
		s.segExp += float32(mu)
	}
	// Fast path: one window of overwhelming evidence fires at once.
	// (llr > 0 here, so the CUSUM segment is open and dates the start.)
	if p.fastH > 0 && !cooling && s.fastLLR(x, mu, 1, unit, p) >= p.fastH {
		s.fireFast(x, mu, m)
		return firedFast
	}
	// A window is anomalous when it adds evidence itself (x/mu above
	// (rho-1)/ln rho, 1.48 for rho = 2.1) and is at least winRatio x mu,
	// the CUSUM is over the threshold and the segment's ratio passes the
	// ratio test; k in a row fire.
	if llr <= 0 || x < p.winRatio*mu || c < p.h || float64(s.segObs) < p.minRatio*float64(s.segExp) {
		s.run = 0
		return none
	}
	if s.run < 255 {
		s.run++
	}
	if s.run < p.k || cooling {
		return none
	}
	n := float32(m - s.segStart + 1)
	s.firing, s.quiet = true, 0
	s.start = s.segStart
	s.obs, s.base = s.segObs/n, s.segExp/n
	s.segObs, s.segExp = 0, 0
	return fired
}

// calm reports whether the series may learn from the current window: not
// firing and not in a run of anomalous windows. (Freezing on a rising
// CUSUM instead deadlocks on slow legitimate change: the baseline stops
// following while the ratio climbs to the test.)
func (s *series) calm() bool {
	return !s.firing && s.run == 0
}

// learnCount folds a calm window into the level (y deseasonalized by idx)
// and the dispersion (x against mu).
func (s *series) learnCount(x, mu, idx, unit float64, p *countParams) {
	if idx < 1e-6 {
		idx = 1e-6
	}
	y := x / idx
	if s.n < p.warm {
		s.n++
		s.level += (float32(y) - s.level) / float32(s.n)
		if s.n > 1 && mu > 0 {
			r2 := (x - mu) * (x - mu) / mu
			s.disp += (float32(r2) - s.disp) / float32(s.n-1)
		} else {
			s.disp = float32(unit)
		}
		return
	}
	l := float64(s.level)
	phi := math.Max(float64(s.disp), unit)
	sd := math.Sqrt(phi*math.Max(l, 1e-9)/idx) + 1e-9
	y = math.Min(math.Max(y, l-4*sd), l+4*sd)
	s.level = float32(l + p.alpha*(y-l))
	if mu > 0 {
		r2 := math.Min((x-mu)*(x-mu)/mu, 16*phi)
		s.disp = float32(float64(s.disp) + p.alphaD*(r2-float64(s.disp)))
	}
}

// latParams parameterizes the latency detector.
type latParams struct {
	factor     float64
	lnThr      float64 // ln(factor*ratio_fraction)
	lnResolve  float64
	z          float64
	minSamples uint32
	maxEpisode int32
	k          uint8
	quiet      uint8
	cooldown   uint8
	warm       uint16
	alpha      float64
}

func newLatParams(c *Config, factor float64) latParams {
	thr := factor * c.Latency.RatioFraction
	k := c.Latency.KWindows
	if k == 0 {
		k = c.KWindows
	}
	return latParams{
		factor:     factor,
		lnThr:      math.Log(thr),
		lnResolve:  math.Log(1 + (thr-1)*c.ResolveRatio),
		z:          c.Latency.Z,
		minSamples: uint32(c.Latency.MinSamples),
		maxEpisode: int32(c.MaxEpisode / 60e9),
		k:          uint8(k),
		quiet:      uint8(min(255, int(c.QuietPeriod/60e9))),
		cooldown:   uint8(min(255, int(c.Cooldown/60e9))),
		warm:       uint16(min(c.WarmupWindows, 30)),
		alpha:      1 - math.Exp2(-60/c.BaselineHalfLife.Seconds()),
	}
}

// stepLatency evaluates one window with P95 p95 (ms) from samples samples.
func (s *series) stepLatency(p95 float64, samples uint32, m int32, p *latParams) transition {
	enough := samples >= p.minSamples && p95 > 0
	var d float64
	if enough {
		d = math.Log(p95) - float64(s.level)
	}
	if s.firing {
		if !enough || d < p.lnResolve {
			s.quiet++
		} else {
			s.quiet = 0
		}
		if s.quiet >= p.quiet || m-s.start >= p.maxEpisode {
			if s.quiet < p.quiet && enough {
				s.level += float32(d) // the new normal
			}
			s.firing, s.run = false, 0
			s.cool = p.cooldown
			return resolved
		}
		return none
	}
	cooling := s.cool > 0
	if cooling {
		s.cool--
	}
	if !enough {
		return none // windows without enough samples neither count nor break a run
	}
	sd := math.Sqrt(math.Max(float64(s.disp), 0.0025))
	alarm := s.n >= p.warm && d >= p.lnThr && d >= p.z*sd
	if !alarm {
		s.run = 0
		s.learnLatency(d)
		return none
	}
	if s.run < 255 {
		s.run++
	}
	if s.run < p.k || cooling {
		return none
	}
	s.firing, s.quiet = true, 0
	s.start = m - int32(s.run) + 1
	s.obs, s.base = float32(p95), float32(math.Exp(float64(s.level)))
	return fired
}

// learnLatency folds a calm window with log deviation d from the level.
func (s *series) learnLatency(d float64) {
	if s.n == 0 {
		s.n = 1
		s.level += float32(d)
		return
	}
	sd := math.Sqrt(math.Max(float64(s.disp), 0.0025))
	if s.n < 30 {
		s.n++
		s.level += float32(d / float64(s.n))
		s.disp += (float32(d*d) - s.disp) / float32(s.n-1)
		return
	}
	if s.n < math.MaxUint16 {
		s.n++
	}
	d = math.Min(math.Max(d, -4*sd), 4*sd)
	s.level += float32(0.02 * d)
	s.disp += float32(0.01 * (d*d - float64(s.disp)))
}
