package anomaly

import "math"

// Scales. Every count series (usage per kind, cost) is tested on its
// 1-minute window and on the windows over the last 5, 15 and 60 minutes,
// built from the same 1-minute values: a busy tenant fires within a
// minute or two on the 1-minute scale, a small one on the shortest window
// that holds enough events for the test. An episode keeps the scale it
// fired on: its quiet run is judged on windows of that scale.
const numScales = 4

// scaleLen returns the length in minutes of scale i (0: 1 minute, 1: 5,
// 2: 15, 3: 60).
func scaleLen(i uint8) int32 {
	switch i {
	case 1:
		return 5
	case 2:
		return 15
	case 3:
		return 60
	}
	return 1
}

// scaleLabel is the value of the scale label of scale i.
func scaleLabel(i uint8) string {
	switch i {
	case 1:
		return "5m"
	case 2:
		return "15m"
	case 3:
		return "60m"
	}
	return "1m"
}

// ring holds the recent per-minute values of one series for the long
// windows (60 bytes): the last 5 minutes, the last three 5-minute block
// sums, the last four 15-minute block sums, and running sums of the last
// 5 minutes and of the blocks being filled. Blocks are aligned to the
// clock, so a window over the last S minutes is a few whole blocks and
// the block being filled: closing a minute updates three sums, and
// reading the windows adds at most four numbers each.
type ring struct {
	min [5]float32 // minute m at m mod 5
	b5  [3]float32 // 5-minute block b (minutes 5b to 5b+4) at b mod 3
	b15 [4]float32 // 15-minute block c at c mod 4
	s5  float32    // the last 5 minutes
	p5  float32    // the 5-minute block being filled
	p15 float32    // the 15-minute block being filled
}

// ringPos is where a minute falls in the blocks of the rings; a tenant
// computes it once per minute for all of its rings.
type ringPos struct {
	i, i15 uint32 // minute mod 5 and mod 15
	b, c   uint32 // its 5-minute block mod 3, its 15-minute block mod 4
}

// posOf returns the position of minute m (minutes since 1970, so >= 0).
func posOf(m int32) ringPos {
	u := uint32(m)
	return ringPos{i: u % 5, i15: u % 15, b: u / 5 % 3, c: u / 15 % 4}
}

// push records the value of the minute at p, the minute just closed, and
// closes the blocks that end with it.
func (r *ring) push(p ringPos, v float32) {
	r.s5 += v - r.min[p.i]
	r.min[p.i] = v
	if p.i == 0 {
		r.p5 = 0
	}
	if p.i15 == 0 {
		r.p15 = 0
	}
	r.p5 += v
	r.p15 += v
	if p.i != 4 {
		return
	}
	r.b5[p.b] = r.p5
	r.s5 = r.p5 // the last 5 minutes are the block: no drift
	if p.i15 == 14 {
		r.b15[p.c] = r.p15
	}
}

// sums writes into out[1:] the sums of the windows at the minute at p: the
// last 5 minutes; the 5-minute block being filled and the two before it
// (11 to 15 minutes); the 15-minute block being filled and the three
// before it (46 to 60 minutes). At the end of a block the windows are
// whole.
func (r *ring) sums(p ringPos, out *[numScales]float64) {
	out[1] = float64(r.s5)
	out[2] = float64(r.p5 + r.b5[(p.b+2)%3] + r.b5[(p.b+1)%3])
	out[3] = float64(r.p15 + r.b15[(p.c+3)%4] + r.b15[(p.c+2)%4] + r.b15[(p.c+1)%4])
}

// parts writes the parts of the window of scale i at the minute at p,
// oldest first (their sums and lengths in minutes), and returns how many
// there are.
func (r *ring) parts(i uint8, p ringPos, sum *[5]float64, n *[5]int32) int {
	switch i {
	case 1:
		for k := uint32(0); k < 5; k++ {
			sum[k], n[k] = float64(r.min[(p.i+1+k)%5]), 1
		}
		return 5
	case 2:
		sum[0], sum[1], sum[2] = float64(r.b5[(p.b+1)%3]), float64(r.b5[(p.b+2)%3]), float64(r.p5)
		n[0], n[1], n[2] = 5, 5, int32(p.i)+1
		return 3
	}
	for k := uint32(0); k < 3; k++ {
		sum[k], n[k] = float64(r.b15[(p.c+1+k)%4]), 15
	}
	sum[3], n[3] = float64(r.p15), int32(p.i15)+1
	return 4
}

// scale multiplies every value by f.
func (r *ring) scale(f float32) {
	for i := range r.min {
		r.min[i] *= f
	}
	for i := range r.b5 {
		r.b5[i] *= f
	}
	for i := range r.b15 {
		r.b15[i] *= f
	}
	r.s5 *= f
	r.p5 *= f
	r.p15 *= f
}

// windowLen is the length in minutes of the window of scale i at minute
// m: 5; 11 to 15; 46 to 60.
func windowLen(i uint8, m int32) int32 {
	switch i {
	case 1:
		return 5
	case 2:
		return 11 + int32(posOf(m).i)
	case 3:
		return 46 + int32(posOf(m).i15)
	}
	return 1
}

// longParams parameterizes the long windows of one count metric.
type longParams struct {
	h    float64 // single-window threshold (scales.significance); 0: long windows off
	hold float64 // a window at winRatio with this much evidence holds learning
	// minInfo is the expected count over dispersion from which a window
	// could hold significant evidence of a spike at the design factor on
	// its own: h / (factor ln rho - (rho - 1)), 12 at the defaults. A long
	// window is tested only from there, so a firing episode's windows are
	// never too small to tell the spike from normal; the 1-minute scale
	// asks it of its quiet run (quiet_period windows).
	minInfo float64
	alphaD  [numScales]float64 // dispersion EWMA weight per block, scales 1-3
}

func newLongParams(c *Config, factor float64, p *countParams) longParams {
	if !c.Scales.Enabled {
		return longParams{}
	}
	h := c.Scales.Significance
	lp := longParams{h: h, hold: h / 3, minInfo: h / (factor*p.lnRho - p.rhoM1)}
	// The dispersion of a long window follows with the half-life of the
	// 1-minute one, and at least 24 blocks (the 60-minute window is
	// learned every 15 minutes).
	hl := 4 * c.BaselineHalfLife.Minutes()
	for i := uint8(1); i < numScales; i++ {
		step := float64(min(scaleLen(i), 15))
		lp.alphaD[i] = 1 - math.Exp2(-1/math.Max(24, hl/step))
	}
	return lp
}

// windows are one count series' values at one minute on every scale:
// index 0 is the minute itself, 1 to 3 the windows over the last 5, 15
// and 60 minutes; phi is the dispersion on each scale.
type windows struct {
	x, mu, phi [numScales]float64
	unit       float64 // the size of one event: 1 for counts, the mean quantity or cost per event
	minute     bool    // the 1-minute scale holds enough evidence for this series
	long       bool    // one minute alone is too small to show a spike: test the long windows
	seasonal   bool    // the tenant has its seasonal profile, so the long windows are on
	clear      int32   // minutes since the series' last episode ended
}

// longState is the long-window state of one count series (80 bytes).
type longState struct {
	obs   ring
	disp  [numScales - 1]float32 // dispersion of the 5, 15 and 60-minute windows
	busy  int32                  // last minute the series was not calm
	ended int32                  // last minute of the series' last episode
}

// Stages of a tenant's long windows.
const (
	// scalesOff: no seasonal profile yet (a tenant's first day) or scales
	// disabled. Over 5 to 60 minutes a flat baseline cannot tell the
	// daily cycle from a spike, so the long windows wait for the profile.
	scalesOff uint8 = iota
	// scalesFilling: the rings are filling; the windows are not whole yet.
	scalesFilling
	// scalesReady: the rings hold the last hour; the long windows are on.
	scalesReady
)

// ringFill is how many minutes the rings take to hold whole windows.
const ringFill = 60

// fill records minute m of a series (x observed, mu expected, level its
// deseasonalized level, phi1 its 1-minute dispersion) and computes its
// windows; idx holds the tenant's seasonal index summed over the same
// windows, so the expected count of a window is level x idx. stage is the
// tenant's (scalesOff: the ring is left alone).
func (ls *longState) fill(w *windows, x, mu, level, phi1, unit float64, idx *[numScales]float64, stage uint8, m int32, pos ringPos, p *countParams) {
	w.x[0], w.mu[0], w.phi[0], w.unit = x, mu, phi1, unit
	lp := &p.long
	w.seasonal = stage == scalesReady && lp.h > 0
	w.minute = p.minuteOn(mu, phi1, w.seasonal)
	w.long = w.seasonal && mu < lp.minInfo*phi1
	if stage == scalesOff || lp.h <= 0 {
		return
	}
	w.clear = m - ls.ended
	ls.obs.push(pos, float32(x))
	if !w.seasonal {
		return
	}
	ls.obs.sums(pos, &w.x)
	for i := 1; i < numScales; i++ {
		w.mu[i] = level * idx[i]
		w.phi[i] = math.Max(float64(ls.disp[i-1]), phi1)
	}
}

// minuteOn reports whether the 1-minute scale is used for a series with
// mu expected per minute and dispersion phi: its quiet run (quiet_period
// windows) must hold minInfo, or an episode could not tell a normal
// minute from a noisy one (about 2.4 events/min at the defaults, where
// min_volume was 2 before the long windows). Where the long windows can
// take over (seasonal), twice that: with fewer events a spike's minutes
// sum low by chance often enough to resolve an episode in mid-spike, and
// the 5 or 15-minute window does better.
func (p *countParams) minuteOn(mu, phi float64, seasonal bool) bool {
	if p.long.h <= 0 {
		return true
	}
	need := p.long.minInfo
	if seasonal {
		need *= 2
	}
	return float64(p.quiet)*mu >= need*phi
}

// stepLong tests the long windows of a series that is not firing, the
// shortest first, when one minute alone is too small to show a spike
// (expected count over dispersion below minInfo: a busy series is left to
// the 1-minute scale and its k windows in a row). A window is tested only
// when its own expected count over dispersion reaches minInfo; it fires when it passes the ratio test and
// its quasi-log-likelihood ratio (the same test as the 1-minute CUSUM,
// with the window's own dispersion) reaches scales.significance. A window
// at winRatio with a third of that evidence holds learning, so the first
// minutes of a slow-building spike do not raise the baseline. A window
// that still holds minutes of the series' last episode is not tested: one
// spike is one episode, whatever the scales that see it.
func (s *series) stepLong(w *windows, cooling bool, m int32, p *countParams) transition {
	lp := &p.long
	if lp.h <= 0 || !w.long {
		return none
	}
	for i := uint8(1); i < numScales; i++ {
		x, mu, phi := w.x[i], w.mu[i], w.phi[i]
		if x < p.winRatio*mu || mu < lp.minInfo*phi || w.clear < scaleLen(i) {
			continue
		}
		llr := p.llr(x, mu, phi, w.unit)
		if llr >= lp.hold {
			s.hold = true
		}
		if !cooling && x >= p.minRatio*mu && llr >= lp.h {
			s.fire(m, x, mu, i) // longStart dates it
			return fired
		}
	}
	return none
}

// longStart dates an episode that fired on the long window of scale
// s.scale at minute m (w its windows): it starts with the suffix of whole
// parts of the window that holds the most evidence, and reports that
// suffix's observed and expected per minute. obs is the series' ring, idx
// the tenant's.
func (s *series) longStart(obs, idx *ring, level float64, w *windows, m int32, p *countParams) {
	var xs, is [5]float64
	var ns [5]int32
	pos := posOf(m)
	k := obs.parts(s.scale, pos, &xs, &ns)
	idx.parts(s.scale, pos, &is, &ns)
	best := math.Inf(-1)
	var bx, bm float64
	var bn int32
	var sx, sm float64
	var sn int32
	for j := k - 1; j >= 0; j-- {
		sx += xs[j]
		sm += level * is[j]
		sn += ns[j]
		if l := p.llr(sx, sm, w.phi[s.scale], w.unit); l > best && sx >= p.minRatio*sm {
			best, bx, bm, bn = l, sx, sm, sn
		}
	}
	if bn == 0 {
		return // keeps what stepLong set: the whole window
	}
	s.start = m - bn + 1
	s.obs, s.base = float32(bx/float64(bn)), float32(bm/float64(bn))
}

// learn folds the blocks that closed at minute m (at pos) into the long
// windows' dispersion, when the series was calm (and warm) through the
// whole window; w are the series' windows at m.
func (ls *longState) learn(w *windows, calm bool, m int32, pos ringPos, p *countParams) {
	if !calm {
		ls.busy = m
		return
	}
	if !w.seasonal || pos.i != 4 {
		return
	}
	for i := uint8(1); i < numScales; i++ {
		if i > 1 && pos.i15 != 14 {
			break
		}
		mu := w.mu[i]
		if m-ls.busy < scaleLen(i) || !(mu > 0) {
			continue
		}
		d := &ls.disp[i-1]
		if *d == 0 {
			*d = float32(w.phi[0])
		}
		x := w.x[i]
		r2 := math.Min((x-mu)*(x-mu)/mu, 16*w.phi[i])
		*d += float32(p.long.alphaD[i] * (r2 - float64(*d)))
	}
}
