package metrics

import (
	"math"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// hysteresis: a tenant outside the top-K displaces the least active member
// only when its decayed rate is this many times the member's, so tenants of
// similar activity do not flap between their own series and the overflow.
const hysteresis = 2.0

type descs struct {
	events, quantity, errors, cost, latency *prometheus.Desc
	corrections, corrected                  *prometheus.Desc
	anomalies, throttled, spendCap          *prometheus.Desc
	tracked, series, evictions              *prometheus.Desc
}

func newDescs() descs {
	t := []string{"tenant"}
	return descs{
		events: prometheus.NewDesc("tenantguard_tenant_events_total",
			"Valid events stored per tenant and kind; api_request events are the tenant's requests. Tenants outside the top-K are summed under tenant=\"__overflow__\".",
			[]string{"tenant", "kind"}, nil),
		quantity: prometheus.NewDesc("tenantguard_tenant_quantity_total",
			"Sum of event quantity per tenant and kind, in the kind's unit (tokens, bytes, seconds, calls).",
			[]string{"tenant", "kind"}, nil),
		errors: prometheus.NewDesc("tenantguard_tenant_errors_total",
			"Events with error=true per tenant, all kinds.", t, nil),
		cost: prometheus.NewDesc("tenantguard_tenant_cost_total",
			"Cost of the tenant's events from the price book, in the price book's currency.", t, nil),
		corrections: prometheus.NewDesc("tenantguard_tenant_corrections_total",
			"Corrections (voids and amendments) applied to the tenant's stored events, per kind. The event, quantity and cost counters keep counting what was ingested.",
			[]string{"tenant", "kind"}, nil),
		corrected: prometheus.NewDesc("tenantguard_tenant_corrected_cost_total",
			"Cost that corrections removed (direction=\"credit\") or added (direction=\"debit\"); the tenant's net cost is cost_total - credit + debit.",
			[]string{"tenant", "direction"}, nil),
		latency: prometheus.NewDesc("tenantguard_tenant_request_duration_seconds",
			"Latency of api_request events per tenant, from latency_ms.", t, nil),
		anomalies: prometheus.NewDesc("tenantguard_tenant_active_anomalies",
			"Anomalies currently firing per tenant.", t, nil),
		throttled: prometheus.NewDesc("tenantguard_tenant_throttled",
			"1 while a throttle, shed or open-circuit decision is in force for the tenant (the overflow series counts such tenants).", t, nil),
		spendCap: prometheus.NewDesc("tenantguard_tenant_spend_cap",
			"Monthly spend cap of the tenant's plan, in the price book's currency; only tenants with their own series.", t, nil),
		tracked: prometheus.NewDesc("tenantguard_exporter_tracked_tenants",
			"Tenants the exporter holds state for (seen within the idle TTL).", nil, nil),
		series: prometheus.NewDesc("tenantguard_exporter_tenant_series",
			"Tenants that have their own tenant label (at most exporter.max_tenant_series).", nil, nil),
		evictions: prometheus.NewDesc("tenantguard_exporter_tenant_series_evictions_total",
			"Tenants whose own series were removed, by reason (idle, displaced); their counts move into the overflow series.",
			[]string{"reason"}, nil),
	}
}

// collectState is owned by the scrape path, under Metrics.collectMu.
type collectState struct {
	lastCollect time.Time
	retired     counts // forgotten tenants' totals; part of the overflow
	// last emitted overflow float values, to keep them monotonic against
	// rounding when the set of summed tenants changes.
	lastQty                   map[string]float64
	lastCost                  float64
	lastCredited, lastDebited float64
	lastLatSum                float64
	evictIdle                 uint64
	evictMoved                uint64
	list                      []*tenant
	snaps                     []counts
}

func (s *collectState) init(l *histLayout) {
	s.retired = counts{lat: newHist(l)}
	s.lastQty = make(map[string]float64)
}

// corrected reports whether any correction was counted in c.
func (c *counts) corrected() bool {
	for _, k := range c.kinds {
		if k.corrections > 0 {
			return true
		}
	}
	return false
}

// add merges o into c; kinds match by name.
func (c *counts) add(o *counts) {
	for _, k := range o.kinds {
		i := c.kindIndex(k.kind)
		c.kinds[i].events += k.events
		c.kinds[i].qty += k.qty
		c.kinds[i].corrections += k.corrections
	}
	c.errors += o.errors
	c.cost += o.cost
	c.credited += o.credited
	c.debited += o.debited
	c.lat.add(&o.lat)
}

func (c *counts) kindIndex(kind string) int {
	for i := range c.kinds {
		if c.kinds[i].kind == kind {
			return i
		}
	}
	c.kinds = append(c.kinds, kindCount{kind: kind})
	return len(c.kinds) - 1
}

// sub returns c - base, where base is an earlier snapshot of c.
func (c *counts) sub(base *counts) counts {
	d := counts{kinds: make([]kindCount, len(c.kinds)), errors: c.errors - base.errors}
	copy(d.kinds, c.kinds)
	for _, b := range base.kinds {
		for i := range d.kinds {
			if d.kinds[i].kind == b.kind {
				d.kinds[i].events -= b.events
				d.kinds[i].qty = math.Max(0, d.kinds[i].qty-b.qty)
				d.kinds[i].corrections -= b.corrections
			}
		}
	}
	d.cost = math.Max(0, c.cost-base.cost)
	d.credited = math.Max(0, c.credited-base.credited)
	d.debited = math.Max(0, c.debited-base.debited)
	d.lat = c.lat.sub(&base.lat)
	return d
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	d := m.descs
	for _, x := range []*prometheus.Desc{d.events, d.quantity, d.errors, d.cost, d.latency, d.corrections, d.corrected,
		d.anomalies, d.throttled, d.spendCap, d.tracked, d.series, d.evictions} {
		ch <- x
	}
}

// Collect implements prometheus.Collector. Each scrape re-ranks tenants,
// applies the idle TTL, and renders the top-K and the overflow.
//
// A member's series show cur-base, where base is its total when it got its
// own series (zero if no scrape had summed it into the overflow yet). The
// overflow shows retired + sum(cur of non-members) + sum(base of members).
// Entering the top-K therefore leaves the overflow unchanged; leaving it
// moves the member's series value into the overflow in one step. Every
// series is monotonic and the sum over tenant equals every event observed.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.collectMu.Lock()
	defer m.collectMu.Unlock()
	st := &m.state
	now := m.now()
	decay := 1.0
	if !st.lastCollect.IsZero() {
		decay = math.Exp(-now.Sub(st.lastCollect).Seconds() / m.cfg.ActivityWindow.Seconds())
	}
	st.lastCollect = now

	m.mu.RLock()
	list := st.list[:0]
	for _, t := range m.tenants {
		list = append(list, t)
	}
	m.mu.RUnlock()
	snaps := st.snaps[:0]
	for _, t := range list {
		t.mu.Lock()
		snaps = append(snaps, t.cur.clone())
		t.mu.Unlock()
	}

	members := m.updateActivity(now, decay, list, snaps)
	m.forgetIdle(list, snaps)
	m.rank(list, snaps, members)

	// Render members; sum the rest into the overflow.
	over := st.retired.clone()
	m.invalid.mu.Lock()
	over.add(&m.invalid.cur)
	m.invalid.mu.Unlock()
	nSeries := 0
	for i, t := range list {
		if t == nil {
			continue
		}
		if !t.member {
			over.add(&snaps[i])
			t.fresh = false
			continue
		}
		nSeries++
		own := snaps[i].sub(&t.base)
		m.emitCounts(ch, t.id, &own)
		over.add(&t.base)
	}
	if over.events() > 0 || over.corrected() {
		m.monotonicOverflow(&over)
		m.emitCounts(ch, OverflowTenant, &over)
	}
	m.emitGauges(ch, over.events() > 0)

	d := m.descs
	ch <- prometheus.MustNewConstMetric(d.tracked, prometheus.GaugeValue, float64(len(list)-countNil(list)))
	ch <- prometheus.MustNewConstMetric(d.series, prometheus.GaugeValue, float64(nSeries))
	ch <- prometheus.MustNewConstMetric(d.evictions, prometheus.CounterValue, float64(st.evictIdle), "idle")
	ch <- prometheus.MustNewConstMetric(d.evictions, prometheus.CounterValue, float64(st.evictMoved), "displaced")

	// Keep the scratch slices, without pinning tenant state.
	clear(list)
	clear(snaps)
	st.list, st.snaps = list[:0], snaps[:0]
}

func countNil(list []*tenant) int {
	n := 0
	for _, t := range list {
		if t == nil {
			n++
		}
	}
	return n
}

// updateActivity refreshes scores and last-active times, exits idle
// members, and returns how many members remain.
func (m *Metrics) updateActivity(now time.Time, decay float64, list []*tenant, snaps []counts) int {
	members := 0
	for i, t := range list {
		n := snaps[i].events()
		delta := n - t.lastEvents
		t.lastEvents = n
		if delta > 0 || t.lastActive.IsZero() {
			t.lastActive = now
		}
		t.score = t.score*decay + float64(delta)
		if t.member && now.Sub(t.lastActive) >= m.cfg.IdleSeriesTTL {
			t.member, t.base = false, counts{}
			m.state.evictIdle++
		}
		if t.member {
			members++
		}
	}
	return members
}

// forgetIdle drops idle non-members, moving their totals into retired; a
// tenant's spend cap goes with it.
func (m *Metrics) forgetIdle(list []*tenant, snaps []counts) {
	now := m.state.lastCollect
	locked := false
	for i, t := range list {
		if t.member || now.Sub(t.lastActive) < m.cfg.IdleSeriesTTL {
			continue
		}
		if !locked {
			m.mu.Lock()
			locked = true
		}
		// Observe holds m.mu for reading through its update, so cur is final.
		t.mu.Lock()
		cur := t.cur
		t.mu.Unlock()
		if cur.events() != snaps[i].events() {
			continue // an event arrived since the snapshot: not idle after all
		}
		m.state.retired.add(&cur)
		delete(m.tenants, t.id)
		list[i] = nil
	}
	if locked {
		m.mu.Unlock()
	}
}

// rank gives free slots to the most active non-members and lets a
// non-member displace the least active member past the hysteresis.
func (m *Metrics) rank(list []*tenant, snaps []counts, members int) {
	var cands, mems []int
	for i, t := range list {
		switch {
		case t == nil:
		case t.member:
			mems = append(mems, i)
		case t.score > 0:
			cands = append(cands, i)
		}
	}
	sort.Slice(cands, func(a, b int) bool { return list[cands[a]].score > list[cands[b]].score })
	sort.Slice(mems, func(a, b int) bool { return list[mems[a]].score < list[mems[b]].score })
	free := m.cfg.MaxTenantSeries - members
	for _, ci := range cands {
		c := list[ci]
		if free <= 0 {
			if len(mems) == 0 || c.score <= hysteresis*list[mems[0]].score {
				break
			}
			w := list[mems[0]]
			mems = mems[1:]
			w.member, w.base = false, counts{}
			m.state.evictMoved++
			free++
		}
		c.member = true
		if c.fresh {
			c.base = counts{} // never summed into an emitted overflow
		} else {
			c.base = snaps[ci]
		}
		free--
	}
}

// monotonicOverflow clamps the overflow's float sums to what was last
// emitted: the set of tenants summed changes between scrapes, and float
// addition in another order may round a hair lower.
func (m *Metrics) monotonicOverflow(o *counts) {
	st := &m.state
	for i := range o.kinds {
		k := &o.kinds[i]
		if last := st.lastQty[k.kind]; k.qty < last {
			k.qty = last
		}
		st.lastQty[k.kind] = k.qty
	}
	o.cost = math.Max(o.cost, st.lastCost)
	st.lastCost = o.cost
	o.credited, o.debited = math.Max(o.credited, st.lastCredited), math.Max(o.debited, st.lastDebited)
	st.lastCredited, st.lastDebited = o.credited, o.debited
	o.lat.sum = math.Max(o.lat.sum, st.lastLatSum)
	st.lastLatSum = o.lat.sum
}

func (m *Metrics) emitCounts(ch chan<- prometheus.Metric, id string, c *counts) {
	d := m.descs
	for _, k := range c.kinds {
		ch <- prometheus.MustNewConstMetric(d.events, prometheus.CounterValue, float64(k.events), id, k.kind)
		ch <- prometheus.MustNewConstMetric(d.quantity, prometheus.CounterValue, k.qty, id, k.kind)
		if k.corrections > 0 {
			ch <- prometheus.MustNewConstMetric(d.corrections, prometheus.CounterValue, float64(k.corrections), id, k.kind)
		}
	}
	if c.credited > 0 || c.debited > 0 {
		ch <- prometheus.MustNewConstMetric(d.corrected, prometheus.CounterValue, c.credited, id, "credit")
		ch <- prometheus.MustNewConstMetric(d.corrected, prometheus.CounterValue, c.debited, id, "debit")
	}
	ch <- prometheus.MustNewConstMetric(d.errors, prometheus.CounterValue, float64(c.errors), id)
	ch <- prometheus.MustNewConstMetric(d.cost, prometheus.CounterValue, c.cost, id)
	ch <- c.lat.metric(m.layout, d.latency, id)
}

// emitGauges renders anomalies and throttles for members (0 when none) and
// sums non-members' into the overflow; then the pg findings.
func (m *Metrics) emitGauges(ch chan<- prometheus.Metric, overflowActive bool) {
	d := m.descs
	m.gaugeMu.Lock()
	defer m.gaugeMu.Unlock()
	m.mu.RLock()
	isMember := func(id string) bool { t := m.tenants[id]; return t != nil && t.member }
	owned := func(id string) bool { return m.owns == nil || m.owns(id) }
	var overAnom, overThr int
	for id, n := range m.anomalies {
		if !isMember(id) && owned(id) {
			overAnom += n
		}
	}
	for id := range m.throttled {
		if !isMember(id) && owned(id) {
			overThr++
		}
	}
	for id, t := range m.tenants {
		if !t.member || !owned(id) {
			continue
		}
		ch <- prometheus.MustNewConstMetric(d.anomalies, prometheus.GaugeValue, float64(m.anomalies[id]), id)
		thr := 0.0
		if m.throttled[id] {
			thr = 1
		}
		ch <- prometheus.MustNewConstMetric(d.throttled, prometheus.GaugeValue, thr, id)
		if t.spendCap > 0 {
			ch <- prometheus.MustNewConstMetric(d.spendCap, prometheus.GaugeValue, t.spendCap, id)
		}
	}
	m.mu.RUnlock()
	if overflowActive || overAnom > 0 || overThr > 0 {
		ch <- prometheus.MustNewConstMetric(d.anomalies, prometheus.GaugeValue, float64(overAnom), OverflowTenant)
		ch <- prometheus.MustNewConstMetric(d.throttled, prometheus.GaugeValue, float64(overThr), OverflowTenant)
	}
}
