package anomaly

import "math"

// series is the state of one detector on one tenant (60 bytes). Every
// detector shares one state machine, the lifecycle methods below: an
// evidence test per window, k anomalous windows in a row to fire (alarm,
// fire), a quiet run of quiet_period to resolve (whileFiring, end), then
// a cool-down (cooling).
type series struct {
	// Read every minute: the flags, the level, the dispersion, the CUSUM.
	firing bool
	hold   bool    // evidence is building (a run over the threshold, or a long window): the series does not learn
	run    uint8   // anomalous windows in a row
	cool   uint8   // windows left in the cool-down
	quiet  uint8   // quiet windows (minutes) in a row, while firing
	scale  uint8   // scale the episode fired on and resolves on (index, see scaleLen)
	n      uint16  // windows learned
	level  float32 // baseline: deseasonalized mean per window (counts) or mean ln value (latency)
	disp   float32 // usage, cost: EWMA of (x-mu)^2 - unit*mu (see phi); errors: var/mean; latency: variance of ln
	dispW  float32 // usage, cost: EWMA of mu^2, the weight of disp
	dispQ  float32 // usage, cost: var/mean, learned as one number
	cusum  float32 // CUSUM statistic (counts)
	segObs float32 // observed since the CUSUM segment started; smoothed observed while firing
	segExp float32 // expected since the CUSUM segment started; smoothed expected while firing
	// Read when a segment starts or while an episode fires.
	segStart int32   // minute the CUSUM segment started
	start    int32   // minute the episode started
	obs      float32 // observed reported in the alert
	base     float32 // baseline reported in the alert
	qObs     float32 // observed over the quiet run, while firing on 1-minute windows
	qExp     float32 // expected over the quiet run
}

// transition of a series after one window.
type transition int8

const (
	none transition = iota
	fired
	resolved
	firedFast // fired by the fast path (one window)
	expired   // max_episode reached: the caller adopts the new normal, then ends the episode
)

// lifecycle holds the parameters of the state machine every detector
// shares, in windows of one minute.
type lifecycle struct {
	k          uint8
	quiet      uint8
	cooldown   uint8
	maxEpisode int32
}

func newLifecycle(c *Config, k int) lifecycle {
	return lifecycle{
		k:          uint8(k),
		quiet:      uint8(min(255, int(c.QuietPeriod/60e9))),
		cooldown:   uint8(min(255, int(c.Cooldown/60e9))),
		maxEpisode: int32(c.MaxEpisode / 60e9),
	}
}

// cooling ticks the cool-down of a series that is not firing and reports
// whether it still blocks a new episode.
func (s *series) cooling() bool {
	if s.cool == 0 {
		return false
	}
	s.cool--
	return true
}

// alarm counts one window into the run of anomalous windows and reports
// whether the run reached k windows and the series may fire.
func (s *series) alarm(anomalous, cooling bool, p *lifecycle) bool {
	if !anomalous {
		s.run = 0
		return false
	}
	if s.run < 255 {
		s.run++
	}
	return s.run >= p.k && !cooling
}

// fire starts an episode at minute start on the given scale, reporting
// obs and base (per window).
func (s *series) fire(start int32, obs, base float64, scale uint8) {
	s.firing, s.quiet, s.run, s.hold = true, 0, 0, false
	s.start, s.scale = start, scale
	s.obs, s.base = float32(obs), float32(base)
	s.cusum, s.segObs, s.segExp, s.qObs, s.qExp = 0, 0, 0, 0, 0
}

// nextQuiet is the quiet run after a window that is quiet or not.
func (s *series) nextQuiet(quiet bool) uint8 {
	if !quiet {
		return 0
	}
	return min(254, s.quiet) + 1
}

// whileFiring records the quiet run after one window of a firing series:
// resolved once it lasts quiet_period and settled (its evidence tells it
// from the spike), expired at max_episode.
func (s *series) whileFiring(quiet uint8, settled bool, m int32, p *lifecycle) transition {
	s.quiet = quiet
	if quiet >= p.quiet && settled {
		return resolved
	}
	if m-s.start >= p.maxEpisode {
		s.quiet = 0 // ends now
		return expired
	}
	return none
}

// end closes the episode and starts the cool-down.
func (s *series) end(p *lifecycle) {
	s.firing, s.hold = false, false
	s.cusum, s.segObs, s.segExp, s.run = 0, 0, 0, 0
	s.cool = p.cooldown
}

// endsAt is the minute the rate was back, for the resolve at minute m:
// the start of the quiet run, or for a long scale the middle of the first
// quiet window (the spike has left at least half of a window that is
// below the resolve ratio, for any spike of at least the ratio test).
func (s *series) endsAt(m int32) int32 {
	e := m - int32(s.quiet) + 1
	if s.quiet > 0 {
		e -= windowLen(s.scale, e) / 2
	}
	return e
}

// calm reports whether the series may learn from the current window: not
// firing and not holding (a run of anomalous windows with the CUSUM over
// the threshold, or a long window that looks anomalous). A lone window at
// 1.66x with little evidence is learned: leaving every such window out
// biases the level low. (Freezing on a rising CUSUM instead deadlocks on
// slow legitimate change: the baseline stops following while the ratio
// climbs to the test.)
func (s *series) calm() bool {
	return !s.firing && !s.hold
}

// countParams parameterizes the count detector for one metric and plan.
type countParams struct {
	lifecycle
	factor   float64 // design factor, for severity
	minRatio float64 // ratio test
	lnRho    float64 // CUSUM alternative: ln(minRatio)
	rhoM1    float64 // minRatio - 1
	h        float64 // CUSUM threshold
	capLLR   float64 // the most one window adds to the CUSUM: 1.2 h / k
	// noEvidence: a window at most this x its expected count has a
	// negative ratio whatever its dispersion (rho ln rho / (rho-1), the
	// lower limit of g/a in llr, 1.42 for rho = 2.1; 1% below it).
	noEvidence float64
	fastH      float64 // single-window threshold of the fast path; 0: off
	winRatio   float64 // a window of a run must be at least this x baseline
	resolve    float64 // window ratio below which a firing window is quiet
	warm       uint16
	alpha      float64 // level EWMA weight
	alphaS     float64 // level EWMA weight of a series on the long windows
	alphaD     float64 // dispersion EWMA weight
	nb         bool    // negative-binomial dispersion (usage, cost), see phi
	long       longParams
}

func newCountParams(c *Config, factor float64) countParams {
	r := factor * c.RatioFraction
	p := countParams{
		lifecycle:  newLifecycle(c, c.KWindows),
		factor:     factor,
		minRatio:   r,
		lnRho:      math.Log(r),
		rhoM1:      r - 1,
		h:          c.Significance,
		capLLR:     1.2 * c.Significance / float64(c.KWindows),
		noEvidence: 0.99 * r * math.Log(r) / (r - 1),
		fastH:      fastH(c),
		winRatio:   1 + (r-1)*runWindowFraction,
		resolve:    1 + (r-1)*c.ResolveRatio,
		warm:       uint16(c.WarmupWindows),
		alpha:      1 - math.Exp2(-60/c.BaselineHalfLife.Seconds()),
		alphaS:     1 - math.Exp2(-60/(4*c.BaselineHalfLife.Seconds())),
		alphaD:     1 - math.Exp2(-60/(4*c.BaselineHalfLife.Seconds())),
		nb:         true,
	}
	p.long = newLongParams(c, factor, &p)
	return p
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

// phi is the dispersion (variance over mean) of a count series' window
// with mu expected, at least unit (1 for counts, the mean quantity or
// cost per event). Usage and cost (p.nb) follow a negative binomial:
// var = unit*mu + b*mu^2, with b the extra-Poisson part estimated as the
// ratio of two EWMAs (excess squared residuals over mu^2, so that busy
// minutes weigh most). Traffic whose noise grows with its rate, as a busy
// tenant's does, keeps the same b through its daily cycle and its
// weekend, where one var/mean learned over hours was too low on Monday
// morning and at the daily peak. It never goes below that one var/mean
// (dispQ, learned too): on a tenant's first day, with a flat baseline,
// the daily cycle is misfit that the rate-proportional form puts into the
// busy hours and takes out of the quiet ones, where 2x misfits then fired.
// Error counts, taken given the window's events, are close to binomial:
// their var/mean is one learned number.
func (s *series) phi(mu, unit float64, p *countParams) float64 {
	if !p.nb {
		return math.Max(float64(s.disp), unit)
	}
	q := math.Max(float64(s.dispQ), unit)
	if s.dispW <= 0 || s.disp <= 0 {
		return q
	}
	return math.Max(unit+float64(s.disp)/float64(s.dispW)*mu, q)
}

// llr is the log-likelihood ratio of x observed against mu expected, for
// the alternative minRatio x mu, under a negative binomial whose
// var/mean is phi, with unit the size of one event (1 for counts, the mean
// quantity or cost per event). With ex = phi/unit - 1, the extra-Poisson
// part, it is (x a - mu g) / unit with a = ln(rho (1+ex) / (1+rho ex))
// and g = ln((1+rho ex) / (1+ex)) / ex: the Poisson ratio
// (x ln rho - mu (rho-1)) / unit as ex goes to 0. A quasi-likelihood
// (the Poisson ratio over phi) has the variance right but not the tail:
// it read two 2.5x minutes of a tenant whose noise is a third of its rate
// as significant, where the negative binomial does not.
func (p *countParams) llr(x, mu, phi, unit float64) float64 {
	ex := phi/unit - 1
	if ex < 1e-6 {
		return (x*p.lnRho - mu*p.rhoM1) / unit
	}
	rx := p.minRatio * ex
	a := math.Log(p.minRatio * (1 + ex) / (1 + rx))
	g := math.Log((1+rx)/(1+ex)) / ex
	return (x*a - mu*g) / unit
}

// fastLLR is the quasi-log-likelihood ratio of one window, or of the
// elapsed fraction f of an open one: x observed against mu*f expected,
// for the alternative minRatio x baseline; 0 below the ratio test. The
// dispersion is the one of a whole window, which overstates the noise of
// a partial window: the test stays conservative.
func (s *series) fastLLR(x, mu, f, unit float64, p *countParams) float64 {
	e := mu * f
	if e < 1e-9 || x < p.minRatio*e {
		return 0
	}
	return p.llr(x, e, s.phi(mu, unit, p), unit)
}

// fireFast starts an episode at minute m from a single window (the fast
// path): obs is the window's observed rate extrapolated to a whole window,
// mu its expected value. A CUSUM run already open dates the start back.
func (s *series) fireFast(obs, mu float64, m int32) {
	start := m
	if s.cusum > 0 && s.segStart < m {
		start = s.segStart
	}
	s.fire(start, obs, mu, 0)
}

// stepOpen runs the fast path on the open window of minute m, of which the
// fraction f has elapsed, with x observed so far. It never learns and
// never touches the CUSUM unless it fires. eligible includes the
// 1-minute scale's own volume condition.
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

// stepCount evaluates minute m of a count-like series on every scale: w
// holds the minute itself (scale 0: x observed, mu expected) and the long
// windows. eligible is false below the minimum volume or during warm-up.
// A transition fired with s.scale > 0 leaves the episode's start and
// reported values to the caller (see longStart).
func (s *series) stepCount(w *windows, eligible bool, m int32, p *countParams) transition {
	x, mu := w.x[0], w.mu[0]
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
		q := s.quietCount(w, mu, p)
		tr := s.whileFiring(q, s.settled(w, p), m, &p.lifecycle)
		if tr == expired {
			// A "spike" this long is the new normal: adopt it and resolve.
			if s.segExp > 0 {
				s.level *= s.segObs / s.segExp
			}
			tr = resolved
		}
		if tr == resolved {
			s.end(&p.lifecycle)
		}
		return tr
	}
	cooling := s.cooling()
	s.hold = false
	if !eligible {
		s.cusum, s.segObs, s.segExp, s.run = 0, 0, 0, 0
		return none
	}
	if tr := s.stepMinute(x, mu, w.phi[0], w.unit, w.minute, cooling, m, p); tr != none {
		return tr
	}
	return s.stepLong(w, cooling, m, p)
}

// quietCount judges one minute of a firing series on its episode's scale
// and returns the quiet run after it. On the 1-minute scale the run is
// quiet while its windows together stay below the resolve ratio (one
// noisy window among normal ones does not restart it; a window of the
// spike does); on a long scale every minute's window over the last 5, 15
// or 60 minutes must be below it.
func (s *series) quietCount(w *windows, mu float64, p *countParams) uint8 {
	if i := s.scale; i > 0 {
		return s.nextQuiet(w.x[i] < p.resolve*w.mu[i])
	}
	x := w.x[0]
	if s.quiet > 0 {
		o, e := float64(s.qObs)+x, float64(s.qExp)+mu
		if o < p.resolve*e {
			s.qObs, s.qExp = float32(o), float32(e)
			return s.nextQuiet(true)
		}
	}
	// No run, or the run is broken: a new one starts with this window if
	// it is quiet on its own.
	s.qObs, s.qExp = float32(x), float32(mu)
	if x < p.resolve*mu {
		return 1
	}
	return 0
}

// settled reports whether the quiet run of an episode tells the rate
// back to normal from the spike: the quasi-log-likelihood ratio of its
// windows (on 1-minute windows the run as a whole, on a long scale the
// current window) for the baseline against the ratio test reaches
// quietEvidence. A busy tenant's run settles at once. A small tenant's
// five 1-minute windows, or a 15-minute window at the edge of its scale,
// may hold a dozen events, which a spike also gives by chance: without
// this, such episodes resolved in mid-spike. Before the long windows (a
// tenant's first day) the 1-minute scale is all there is, and the quiet
// run alone resolves, as it did before them.
func (s *series) settled(w *windows, p *countParams) bool {
	if !w.seasonal {
		return true
	}
	x, mu, phi := float64(s.qObs), float64(s.qExp), w.phi[0]
	if i := s.scale; i > 0 {
		x, mu, phi = w.x[i], w.mu[i], w.phi[i]
	}
	return -p.llr(x, mu, phi, w.unit) >= quietEvidence
}

// quietEvidence is the evidence a quiet run on 1-minute windows needs to
// resolve (a likelihood ratio of 20).
const quietEvidence = 3

// stepMinute is the 1-minute path: a quasi-Poisson CUSUM with a ratio
// test on its segment, k anomalous windows in a row, and the fast path on
// one overwhelming window. on is false where the 1-minute scale holds too
// little evidence for this series (see longParams.minInfo).
func (s *series) stepMinute(x, mu, phi, unit float64, on, cooling bool, m int32, p *countParams) transition {
	if !on {
		s.cusum, s.segObs, s.segExp, s.run = 0, 0, 0, 0
		return none
	}
	if s.cusum == 0 && x <= p.noEvidence*mu {
		s.run = 0 // no segment open and no evidence to start one: most minutes
		return none
	}
	llr := p.llr(x, mu, phi, unit)
	// One window adds at most capLLR: an outlier minute with two merely
	// positive neighbours cannot carry the CUSUM over the threshold, k
	// windows of a spike can (an overwhelming single window is the fast
	// path's).
	c := float64(s.cusum) + math.Min(llr, p.capLLR)
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
	if p.fastH > 0 && !cooling && x >= p.minRatio*mu && llr >= p.fastH {
		s.fireFast(x, mu, m)
		return firedFast
	}
	// A window is anomalous when it adds evidence itself (x/mu above
	// (rho-1)/ln rho, 1.48 for rho = 2.1) and is at least winRatio x mu;
	// k in a row fire once the CUSUM is over the threshold and the
	// segment's ratio passes the ratio test.
	anomalous := llr > 0 && x >= p.winRatio*mu
	k := s.alarm(anomalous, cooling, &p.lifecycle)
	if !anomalous || c < p.h {
		return none
	}
	s.hold = true
	if !k || float64(s.segObs) < p.minRatio*float64(s.segExp) {
		return none
	}
	n := float64(m - s.segStart + 1)
	s.fire(s.segStart, float64(s.segObs)/n, float64(s.segExp)/n, 0)
	return fired
}

// learnCount folds a calm window into the level (y deseasonalized by idx)
// and the dispersion (x against mu). slow is set for a series that is
// on the long windows only (its 1-minute scale is off): its level
// follows with four times baseline_half_life, so a slow-building spike is
// not learned before a 15 or 60-minute window can see it (with the
// 1-hour half-life a small tenant's level had caught up with a 3x spike
// within 2 hours). A series on the 1-minute scale follows at the usual
// pace, and its runs over the threshold hold learning.
func (s *series) learnCount(x, mu, idx, unit float64, slow bool, p *countParams) {
	if idx < 1e-6 {
		idx = 1e-6
	}
	y := x / idx
	if s.n < p.warm {
		s.n++
		s.level += (float32(y) - s.level) / float32(s.n)
		switch k := float32(s.n - 1); {
		case k == 0 || mu <= 0:
		case p.nb:
			s.disp += (float32((x-mu)*(x-mu)-unit*mu) - s.disp) / k
			s.dispW += (float32(mu*mu) - s.dispW) / k
			s.dispQ += (float32((x-mu)*(x-mu)/mu) - s.dispQ) / k
		default:
			s.disp += (float32((x-mu)*(x-mu)/mu) - s.disp) / k
		}
		return
	}
	l := float64(s.level)
	phi := s.phi(mu, unit, p)
	sd := math.Sqrt(phi*math.Max(l, 1e-9)/idx) + 1e-9
	y = math.Min(math.Max(y, l-4*sd), l+4*sd)
	a := p.alpha
	if slow {
		a = p.alphaS
	}
	s.level = float32(l + a*(y-l))
	if mu <= 0 {
		return
	}
	d2 := math.Min((x-mu)*(x-mu), 16*phi*mu) // at most 4 sd
	if p.nb {
		s.disp = float32(float64(s.disp) + p.alphaD*(d2-unit*mu-float64(s.disp)))
		s.dispW = float32(float64(s.dispW) + p.alphaD*(mu*mu-float64(s.dispW)))
		s.dispQ = float32(float64(s.dispQ) + p.alphaD*(d2/mu-float64(s.dispQ)))
		return
	}
	s.disp = float32(float64(s.disp) + p.alphaD*(d2/mu-float64(s.disp)))
}

// latParams parameterizes the latency detector.
type latParams struct {
	lifecycle
	factor     float64
	lnThr      float64 // ln(factor*ratio_fraction)
	lnResolve  float64
	z          float64
	minSamples uint32
	warm       uint16
}

func newLatParams(c *Config, factor float64) latParams {
	thr := factor * c.Latency.RatioFraction
	k := c.Latency.KWindows
	if k == 0 {
		k = c.KWindows
	}
	return latParams{
		lifecycle:  newLifecycle(c, k),
		factor:     factor,
		lnThr:      math.Log(thr),
		lnResolve:  math.Log(1 + (thr-1)*c.ResolveRatio),
		z:          c.Latency.Z,
		minSamples: uint32(c.Latency.MinSamples),
		warm:       uint16(min(c.WarmupWindows, 30)),
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
		tr := s.whileFiring(s.nextQuiet(!enough || d < p.lnResolve), true, m, &p.lifecycle)
		if tr == expired {
			if enough {
				s.level += float32(d) // the new normal
			}
			tr = resolved
		}
		if tr == resolved {
			s.end(&p.lifecycle)
		}
		return tr
	}
	cooling := s.cooling()
	if !enough {
		return none // windows without enough samples neither count nor break a run
	}
	sd := math.Sqrt(math.Max(float64(s.disp), 0.0025))
	anomalous := s.n >= p.warm && d >= p.lnThr && d >= p.z*sd
	if !anomalous {
		s.run = 0
		// A window at the ratio test that is not significant (yet) is not
		// learned either: learning the first windows of a regression
		// raised the level and the spread until it never fired.
		if d < p.lnThr || s.n < p.warm {
			s.learnLatency(d)
		}
		return none
	}
	if !s.alarm(true, cooling, &p.lifecycle) {
		return none
	}
	s.fire(m-int32(s.run)+1, p95, math.Exp(float64(s.level)), 0)
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
