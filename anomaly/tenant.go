package anomaly

import "math"

// kindState is the usage series of one kind of one tenant.
type kindState struct {
	name     string
	cnt      [2]uint32
	qty      [2]float32
	perEvent float32 // EWMA of quantity per event, for quantity kinds
	// perMin is the tenant's expected events per minute (all kinds) and
	// heavy its heaviest user when the kind's usage episode fired: the
	// alerts of the episode carry them.
	perMin   float32
	heavy    heavyUser
	quantity bool // usage is measured by quantity, not count
	s        series
	lw       longState
}

// integState is the error-rate series of one integration of one tenant.
type integState struct {
	name     string
	cnt      [2]uint32
	errs     [2]uint32
	cntLevel float32
	s        series
}

// tenant holds every window and series of one tenant. The two window slots
// are indexed by minute parity: the minute being filled and the previous
// one, still open for late events until it is closed.
type tenant struct {
	id         string
	pp         *planParams
	slotMin    [2]int32 // minute held by a slot; <= lastClosed means free
	count      [2]uint32
	errs       [2]uint32
	latN       [2]uint32
	cost       [2]float32
	lat        [2]latHist
	lastClosed int32 // last minute evaluated
	lastSeen   int32 // last minute with an event
	cntLevel   float32
	cntN       uint16
	// partial: the tenant was created by a live event, so its first window
	// holds only the part of the minute after that event (a daemon that
	// starts at :40 sees 20 s of it). It is discarded, not learned: a
	// third of a window among the first warm-up windows would set the
	// level ~20% low and the dispersion far too high, and an episode
	// judged against that level could not resolve.
	partial bool
	kinds   []kindState
	integ   *[]integState // nil until the tenant has an integration
	prof    profile
	latS    series
	errS    series
	costS   series
	sp      spendState
	users   *[2]topUsers // heaviest users per window slot; nil until an event names a user
	heavy   heavyUser    // the heaviest user of the window the usage alerts look at
	long    *tenantLong  // nil until the tenant has a seasonal profile
}

// tenantLong is a tenant's long-window state (144 bytes), allocated once it
// has a seasonal profile: a tenant on its first day does not carry it,
// and the tenant itself stays in a smaller size class.
type tenantLong struct {
	n    uint8     // minutes pushed into the rings in a row, up to ringFill
	idx  ring      // the seasonal index of recent minutes, for the windows' expected counts
	cost longState // the cost series' windows
}

// longReady reports whether t's long windows hold whole windows.
func (t *tenant) longReady() bool { return t.long != nil && t.long.n >= ringFill }

func newTenant(id string, pp *planParams, m, closed int32) *tenant {
	t := &tenant{id: id, pp: pp, lastClosed: closed, lastSeen: m}
	t.slotMin = [2]int32{closed, closed}
	t.prof.hour = floorDiv(closed+1, 60)
	return t
}

// slot returns the slot index for minute m, or false when m is already
// closed or its slot still holds another open minute.
func (t *tenant) slot(m int32) (int, bool) {
	if m <= t.lastClosed {
		return 0, false
	}
	i := int(m & 1)
	if t.slotMin[i] == m {
		return i, true
	}
	if t.slotMin[i] > t.lastClosed {
		return 0, false
	}
	t.slotMin[i] = m
	return i, true
}

// kind returns the state of kind k, creating it (bounded by maxKinds).
func (t *tenant) kind(k string, d *Detector) *kindState {
	for i := range t.kinds {
		if t.kinds[i].name == k {
			return &t.kinds[i]
		}
	}
	if len(t.kinds) >= d.cfg.MaxKinds {
		return nil
	}
	t.kinds = append(t.kinds, kindState{name: k, quantity: d.qkinds[k]})
	return &t.kinds[len(t.kinds)-1]
}

// integration returns the state of integration name, creating it (bounded).
func (t *tenant) integration(name string, max int) *integState {
	if t.integ == nil {
		t.integ = new([]integState)
	}
	in := *t.integ
	for i := range in {
		if in[i].name == name {
			return &in[i]
		}
	}
	if len(in) >= max {
		return nil
	}
	*t.integ = append(in, integState{name: name})
	return &(*t.integ)[len(in)]
}

// integrations returns the tenant's integration states.
func (t *tenant) integrations() []integState {
	if t.integ == nil {
		return nil
	}
	return *t.integ
}

// closeMinute evaluates minute m of t and appends alerts to out.
func (d *Detector) closeMinute(t *tenant, m int32, out *[]Alert) {
	i := int(m & 1)
	has := t.slotMin[i] == m
	var cnt, errs, latN uint32
	var cost float64
	var p95 float64
	if has {
		cnt, errs, latN, cost = t.count[i], t.errs[i], t.latN[i], float64(t.cost[i])
		if latN > 0 {
			p95 = t.lat[i].quantile(0.95)
			t.lat[i].reset()
		}
		t.count[i], t.errs[i], t.latN[i], t.cost[i] = 0, 0, 0, 0
	}
	t.snapUser(i, cnt)
	t.resetUsers(i)
	if t.partial {
		t.partial = false
		t.discard(i)
		return
	}

	// Seasonal profile: fold finished hours, switch mode when history allows.
	pr := &t.prof
	if h := floorDiv(m, 60); h != pr.hour {
		if pr.hour >= 0 && (pr.acc > 0 || pr.hours > 0) {
			pr.fold()
		}
		pr.hour = h
	}
	if nm := pr.nextMode(); nm != pr.mode {
		// Levels were deseasonalized by the old index: convert them with
		// the mean ratio of the two indexes over the last 6 hours.
		var r float64
		for j := int32(1); j <= 36; j++ {
			r += pr.index(m-10*j, pr.mode) / pr.index(m-10*j, nm)
		}
		t.rescale(r / 36)
		pr.mode = nm
	}
	idx := pr.index(m, pr.mode)
	pr.acc += float32(cnt)

	pp := d.plan(t)
	// The index summed over the long windows: a series' expected count
	// over a window is its level times this.
	var iw [numScales]float64
	pos := posOf(m)
	stage := scalesOff
	var noLong longState // the cost's windows while there are none
	costLS := &noLong
	if d.cfg.Scales.Enabled && pr.mode != modeFlat {
		if t.long == nil {
			t.long = &tenantLong{}
		}
		tl := t.long
		costLS = &tl.cost
		tl.idx.push(pos, float32(idx))
		stage = scalesFilling
		if tl.n < ringFill {
			tl.n++
		}
		if tl.n >= ringFill {
			stage = scalesReady
			tl.idx.sums(pos, &iw)
		}
	}
	// min_volume applies to the tenant's typical (deseasonalized) rate: a
	// tenant's quiet hours are left to the scales, which wait for the
	// events they need.
	volOK := t.cntN >= pp.usage.warm && float64(t.cntLevel)*60 >= pp.minVolume
	allCalm := true
	var w windows

	for k := range t.kinds {
		ks := &t.kinds[k]
		x := float64(ks.cnt[i])
		unit := 1.0
		if ks.quantity {
			if ks.cnt[i] > 0 {
				pe := float32(float64(ks.qty[i]) / x)
				if ks.perEvent == 0 {
					ks.perEvent = pe
				} else {
					ks.perEvent += 0.02 * (pe - ks.perEvent)
				}
			}
			x = float64(ks.qty[i])
			unit = math.Max(float64(ks.perEvent), 1e-9)
		}
		ks.cnt[i], ks.qty[i] = 0, 0
		s := &ks.s
		level := float64(s.level)
		mu := level * idx
		eligible := volOK && s.n >= pp.usage.warm && level/unit*60 >= pp.minVolume
		ks.lw.fill(&w, x, mu, level, s.phi(mu, unit, &pp.usage), unit, &iw, stage, m, pos, &pp.usage)
		if tr := s.stepCount(&w, eligible, m, &pp.usage); tr != none {
			switch {
			case tr == fired && s.scale > 0:
				s.longStart(&ks.lw.obs, &t.long.idx, level, &w, m, &pp.usage)
			case tr == resolved:
				ks.lw.ended = m
			}
			*out = append(*out, d.usageAlert(t, ks, tr, m, idx))
		}
		calm := s.calm()
		if calm {
			s.learnCount(x, mu, idx, unit, w.long && !w.minute, &pp.usage)
		} else {
			allCalm = false
		}
		ks.lw.learn(&w, calm && s.n >= pp.usage.warm, m, pos, &pp.usage)
	}
	if !allCalm {
		pr.unusual = true
	} else {
		learnLevel(&t.cntLevel, &t.cntN, float64(cnt)/idx, &pp.usage)
	}

	// Tenant error rate.
	d.stepErrors(t, &t.errS, "", float64(errs), float64(cnt), float64(t.cntLevel), idx, volOK, m, pp, out)
	integ := t.integrations()
	for g := range integ {
		gs := &integ[g]
		gc, ge := float64(gs.cnt[i]), float64(gs.errs[i])
		gs.cnt[i], gs.errs[i] = 0, 0
		var n uint16 = pp.usage.warm // integrations share the tenant's warm-up
		learnLevel(&gs.cntLevel, &n, gc/idx, &pp.usage)
		gok := volOK && float64(gs.cntLevel)*idx*60 >= pp.minVolume
		d.stepErrors(t, &gs.s, gs.name, ge, gc, float64(gs.cntLevel), idx, gok, m, pp, out)
	}

	// Cost: spend per window against the seasonal baseline, reported per hour.
	{
		s := &t.costS
		level := float64(s.level)
		mu := level * idx
		unit := 1e-12
		if t.cntLevel > 0 && s.level > 0 {
			unit = level / float64(t.cntLevel) // cost per event
		}
		eligible := volOK && s.n >= pp.cost.warm && level > 0
		costLS.fill(&w, cost, mu, level, s.phi(mu, unit, &pp.cost), unit, &iw, stage, m, pos, &pp.cost)
		if tr := s.stepCount(&w, eligible, m, &pp.cost); tr != none {
			switch {
			case tr == fired && s.scale > 0:
				s.longStart(&costLS.obs, &t.long.idx, level, &w, m, &pp.cost)
			case tr == resolved:
				costLS.ended = m
			}
			*out = append(*out, d.countAlert(t, MetricCost, "", "", s, tr, m, &pp.cost, 60))
		}
		calm := s.calm()
		if calm {
			s.learnCount(cost, mu, idx, unit, w.long && !w.minute, &pp.cost)
		}
		costLS.learn(&w, calm && s.n >= pp.cost.warm, m, pos, &pp.cost)
	}

	// Latency P95.
	if tr := t.latS.stepLatency(p95, latN, m, &pp.lat); tr != none {
		*out = append(*out, d.latencyAlert(t, tr, m, &pp.lat))
	}
}

// checkOpen runs the fast path on t's open windows (minutes not yet
// closed) of which at least minElapsed seconds have passed at now: usage
// per kind and cost, each window's count so far against the expected count
// for the elapsed fraction. It appends the alerts of series that fire.
func (d *Detector) checkOpen(t *tenant, now, minElapsed int64, out *[]Alert) {
	for i := range 2 {
		m := t.slotMin[i]
		if m <= t.lastClosed {
			continue
		}
		elapsed := now - int64(m)*60
		if elapsed < minElapsed {
			continue
		}
		f := math.Min(float64(elapsed), 60) / 60
		pp := d.plan(t)
		if !(t.cntN >= pp.usage.warm && float64(t.cntLevel)*60 >= pp.minVolume) {
			continue
		}
		idx := t.prof.index(m, t.prof.mode)
		// No series of a tenant this small uses the 1-minute scale
		// (minuteOn, with a dispersion of at least one): nothing to test.
		if ready := t.longReady(); !pp.usage.minuteOn(float64(t.cntLevel)*idx, 1, ready) && !pp.cost.minuteOn(float64(t.cntLevel)*idx, 1, ready) {
			continue
		}
		t.snapUser(i, t.count[i])
		for k := range t.kinds {
			ks := &t.kinds[k]
			x, unit := float64(ks.cnt[i]), 1.0
			if ks.quantity {
				x, unit = float64(ks.qty[i]), math.Max(float64(ks.perEvent), 1e-9)
			}
			s := &ks.s
			level := float64(s.level)
			mu := level * idx
			eligible := s.n >= pp.usage.warm && level/unit*60 >= pp.minVolume && pp.usage.minuteOn(mu, s.phi(mu, unit, &pp.usage), t.longReady())
			if tr := s.stepOpen(x, mu, f, unit, eligible, m, &pp.usage); tr != none {
				*out = append(*out, d.usageAlert(t, ks, tr, m, idx))
			}
		}
		s := &t.costS
		mu := float64(s.level) * idx
		unit := 1e-12
		if t.cntLevel > 0 && s.level > 0 {
			unit = float64(s.level) / float64(t.cntLevel)
		}
		eligible := s.n >= pp.cost.warm && mu > 0 && pp.cost.minuteOn(mu, s.phi(mu, unit, &pp.cost), t.longReady())
		if tr := s.stepOpen(float64(t.cost[i]), mu, f, unit, eligible, m, &pp.cost); tr != none {
			*out = append(*out, d.countAlert(t, MetricCost, "", "", s, tr, m, &pp.cost, 60))
		}
	}
}

// stepErrors runs the error-rate detector: expected errors are the window's
// events times the baseline error ratio, floored so that only an observed
// ratio of at least min_rate can alert.
func (d *Detector) stepErrors(t *tenant, s *series, integ string, errs, cnt, cntLevel, idx float64, volOK bool, m int32, pp *planParams, out *[]Alert) {
	p0 := 0.0
	if cntLevel > 0 {
		p0 = float64(s.level) / cntLevel
	}
	pEff := math.Max(p0, pp.errFloor)
	eligible := volOK && cnt > 0 && s.n >= pp.errs.warm
	// Error rates are judged on 1-minute windows only.
	w := windows{minute: true, unit: 1}
	// The dispersion is the one learned at the baseline ratio (the floor
	// only moves the alternative).
	w.x[0], w.mu[0], w.phi[0] = errs, cnt*pEff, s.phi(cnt*p0, 1, &pp.errs)
	if tr := s.stepCount(&w, eligible, m, &pp.errs); tr != none {
		a := d.countAlert(t, MetricErrorRate, "", integ, s, tr, m, &pp.errs, 1)
		if tr == fired && cnt > 0 {
			// Report ratios, not counts: observed error ratio over the baseline ratio.
			a.Observed = a.Ratio * pEff
			a.Baseline = pEff
			s.obs, s.base = float32(a.Observed), float32(a.Baseline)
		}
		*out = append(*out, a)
	}
	if s.calm() {
		s.learnCount(errs, math.Max(cnt*p0, 1e-9), idx, 1, false, &pp.errs)
	}
}

// discard drops what the kinds, integrations and users hold in slot i.
func (t *tenant) discard(i int) {
	t.resetUsers(i)
	for k := range t.kinds {
		t.kinds[k].cnt[i], t.kinds[k].qty[i] = 0, 0
	}
	integ := t.integrations()
	for g := range integ {
		integ[g].cnt[i], integ[g].errs[i] = 0, 0
	}
}

// learnLevel is a plain EWMA with a running-mean warm-up.
func learnLevel(level *float32, n *uint16, y float64, p *countParams) {
	if *n < p.warm {
		*n++
		*level += (float32(y) - *level) / float32(*n)
		return
	}
	*level += float32(p.alpha * (y - float64(*level)))
}

// rescale multiplies every deseasonalized level by r.
func (t *tenant) rescale(r float64) {
	if !(r > 0) || math.IsInf(r, 0) {
		return
	}
	f := float32(r)
	t.cntLevel *= f
	for k := range t.kinds {
		t.kinds[k].s.level *= f
	}
	integ := t.integrations()
	for g := range integ {
		integ[g].cntLevel *= f
		integ[g].s.level *= f
	}
	t.errS.level *= f
	t.costS.level *= f
	// Expected counts over the long windows are level x index: keep them.
	if t.long != nil {
		t.long.idx.scale(1 / f)
	}
}
