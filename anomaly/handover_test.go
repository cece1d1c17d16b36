package anomaly_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/anomaly/notify"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// fleet is a set of detectors (replicas, or one replica's restarts) over
// one real ClickHouse: the test stores usage_1m rows as the collector
// would, and every detector's alerts go through the real ClickHouse sink
// into the anomalies table, and into one shared log.
type fleet struct {
	t   *testing.T
	ctx context.Context
	st  *store.Store
	db  string
	cfg anomaly.Config
	ch  *notify.ClickHouse

	mu  sync.Mutex
	log []sent
}

// sent is one alert and the detector that sent it.
type sent struct {
	by string
	a  anomaly.Alert
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	srv, db := testenv.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	st := teststore.On(t, srv, db)
	cfg := anomaly.DefaultConfig()
	cfg.SpendCaps = map[string]float64{anomaly.DefaultPlan: 100}
	return &fleet{t: t, ctx: ctx, st: st, db: db, cfg: cfg, ch: notify.NewClickHouse(st, notify.ClickHouseConfig{Enabled: true})}
}

// detector starts a detector named name whose alerts are recorded in the
// anomalies table (synchronously, as the queue would soon after) and in
// the fleet's log.
func (f *fleet) detector(name string) *anomaly.Detector {
	f.t.Helper()
	d, err := anomaly.New(f.cfg, anomaly.SinkFunc(func(ctx context.Context, a anomaly.Alert) {
		if _, err := f.ch.Notify(ctx, []anomaly.Alert{a}); err != nil {
			f.t.Errorf("record alert: %v", err)
		}
		f.mu.Lock()
		f.log = append(f.log, sent{name, a})
		f.mu.Unlock()
	}))
	if err != nil {
		f.t.Fatal(err)
	}
	return d
}

// spend stores cost for tenant at minute m in usage_1m and, when d is not
// nil, shows it to d (its owner) and lets d evaluate the minute.
func (f *fleet) spend(d *anomaly.Detector, tenant string, m time.Time, cost float64) {
	f.t.Helper()
	f.store(d, anomaly.Rollup{Minute: m, TenantID: tenant, Kind: "api_request", Count: 1, Quantity: 1, Cost: cost})
}

// store stores rollups in usage_1m, in one insert, as the collector
// would; when d is not nil, it shows them to d (their owner) in order and
// lets d evaluate each minute once the next one starts, and the last.
func (f *fleet) store(d *anomaly.Detector, rs ...anomaly.Rollup) {
	f.t.Helper()
	b, err := f.st.Conn().PrepareBatch(f.ctx, "INSERT INTO "+f.db+".usage_1m (tenant_id, kind, minute, count, quantity, cost, errors, latency_count)")
	if err != nil {
		f.t.Fatal(err)
	}
	var hourly []store.HourlyCount
	for _, r := range rs {
		if err := b.Append(r.TenantID, r.Kind, r.Minute, r.Count, r.Quantity, decimal.NewFromFloat(r.Cost), r.Errors, uint64(0)); err != nil {
			b.Abort()
			f.t.Fatal(err)
		}
		hourly = append(hourly, store.HourlyCount{TenantID: r.TenantID, Hour: r.Minute, Count: r.Count})
	}
	if err := b.Send(); err != nil {
		f.t.Fatal(err)
	}
	teststore.Hourly(f.t, f.st, hourly)
	if d == nil {
		return
	}
	// A live detector evaluates on its own clock, not on minute
	// boundaries.
	eval := func(m time.Time) { d.Advance(f.ctx, m.Add(time.Minute+f.cfg.Lateness+7*time.Second)) }
	for i := range rs {
		if i > 0 && rs[i].Minute.After(rs[i-1].Minute) {
			eval(rs[i-1].Minute)
		}
		d.ObserveRollup(&rs[i])
	}
	if len(rs) > 0 {
		eval(rs[len(rs)-1].Minute)
	}
}

// spendAlerts returns the spend_cap alerts sent so far as
// "status threshold" strings, in order, and the fingerprint of each.
func (f *fleet) spendAlerts() (events []string, fps []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.log {
		if s.a.Metric == anomaly.MetricSpendCap {
			events = append(events, fmt.Sprintf("%s %s %s", s.by, s.a.Status, s.a.Labels[anomaly.LabelThreshold]))
			fps = append(fps, s.a.Fingerprint)
		}
	}
	return events, fps
}

// checkOnce fails unless every threshold in want fired exactly once, every
// resolution names the fingerprint its firing alert had, and no
// threshold outside want fired.
func (f *fleet) checkOnce(want ...string) {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	fired := map[string]int{}
	fpOf := map[string]string{}
	for _, s := range f.log {
		if s.a.Metric != anomaly.MetricSpendCap {
			continue
		}
		th := s.a.Labels[anomaly.LabelThreshold]
		switch s.a.Status {
		case anomaly.StatusFiring:
			fired[th]++
			fpOf[th] = s.a.Fingerprint
		case anomaly.StatusResolved:
			if fp, ok := fpOf[th]; !ok || fp != s.a.Fingerprint {
				f.t.Errorf("threshold %s resolved under fingerprint %s, want the firing one %q", th, s.a.Fingerprint, fp)
			}
		}
	}
	var got []string
	for th, n := range fired {
		got = append(got, fmt.Sprintf("%s x%d", th, n))
	}
	sort.Strings(got)
	var exp []string
	for _, th := range want {
		exp = append(exp, th+" x1")
	}
	sort.Strings(exp)
	if strings.Join(got, ",") != strings.Join(exp, ",") {
		ev, _ := f.spendAlertsLocked()
		f.t.Errorf("spend thresholds fired: got %v, want %v (alerts: %v)", got, exp, ev)
	}
}

func (f *fleet) spendAlertsLocked() ([]string, []string) {
	var events, fps []string
	for _, s := range f.log {
		if s.a.Metric == anomaly.MetricSpendCap {
			events = append(events, fmt.Sprintf("%s %s %s", s.by, s.a.Status, s.a.Labels[anomaly.LabelThreshold]))
			fps = append(fps, s.a.Fingerprint)
		}
	}
	return events, fps
}

// TestSpendRestartBetweenThresholds: 70% alerts, the replica restarts, then
// 90% is crossed. Each threshold alerts once, and the 70% alert that was
// firing at the restart is resolved (superseded) under its fingerprint.
func TestSpendRestartBetweenThresholds(t *testing.T) {
	f := newFleet(t)
	now := time.Date(2026, 3, 20, 12, 0, 0, 0, time.UTC)
	a := f.detector("a")
	f.spend(a, "acme", now, 40)
	f.spend(a, "acme", now.Add(time.Minute), 35) // 75%
	f.checkOnce("70")

	now = now.Add(10 * time.Minute)
	b := f.detector("b")
	if _, err := b.WarmStart(f.ctx, f.st, now); err != nil {
		t.Fatal(err)
	}
	b.Advance(f.ctx, now)
	f.checkOnce("70")           // nothing new at the restart
	f.spend(b, "acme", now, 20) // 95%
	f.checkOnce("70", "90")
	if ev, _ := f.spendAlerts(); len(ev) != 3 || ev[1] != "b resolved 70" {
		t.Errorf("spend alerts %v, want a firing 70, its resolution by b, a firing 90", ev)
	}
}

// TestSpendCrossedWhileDown: 70% alerts, then 90% is crossed while no
// replica runs. The replica that starts next alerts 90% (once), where
// replaying the spend used to mark it alerted.
func TestSpendCrossedWhileDown(t *testing.T) {
	f := newFleet(t)
	now := time.Date(2026, 3, 20, 12, 0, 0, 0, time.UTC)
	a := f.detector("a")
	f.spend(a, "acme", now, 75)
	f.checkOnce("70")
	f.spend(nil, "acme", now.Add(5*time.Minute), 20) // 95%, nobody running

	now = now.Add(10 * time.Minute)
	b := f.detector("b")
	if _, err := b.WarmStart(f.ctx, f.st, now); err != nil {
		t.Fatal(err)
	}
	b.Advance(f.ctx, now)
	f.checkOnce("70", "90")

	// A second restart repeats nothing.
	now = now.Add(10 * time.Minute)
	c := f.detector("c")
	if _, err := c.WarmStart(f.ctx, f.st, now); err != nil {
		t.Fatal(err)
	}
	c.Advance(f.ctx, now)
	f.spend(c, "acme", now, 1) // 96%: no threshold
	f.checkOnce("70", "90")
}

// minutes returns the rollups of tenant's api_request events, n a minute,
// for the minutes in [from, to).
func minutes(tenant string, from, to time.Time, n uint64) []anomaly.Rollup {
	var rs []anomaly.Rollup
	for m := from; m.Before(to); m = m.Add(time.Minute) {
		rs = append(rs, anomaly.Rollup{Minute: m, TenantID: tenant, Kind: "api_request", Count: n, Quantity: float64(n)})
	}
	return rs
}

// usageAlerts returns the usage alerts sent so far as "by status" strings,
// and their fingerprints.
func (f *fleet) usageAlerts(tenant string) (events []string, fps []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.log {
		if s.a.Metric == anomaly.MetricUsage && s.a.TenantID == tenant {
			events = append(events, s.by+" "+string(s.a.Status))
			fps = append(fps, s.a.Fingerprint)
		}
	}
	return events, fps
}

func only(tenant string) func(string) bool { return func(id string) bool { return id == tenant } }

func not(tenant string) func(string) bool { return func(id string) bool { return id != tenant } }

// TestHandoverOpenEpisode: a usage episode fires on replica a; the tenant
// moves to b, then back to a, while it is open. It fires once, is never
// resolved by the replica that let it go, and resolves once, under the
// fingerprint it fired with. The other tenant a keeps is left alone.
func TestHandoverOpenEpisode(t *testing.T) {
	f := newFleet(t)
	now := time.Date(2026, 3, 20, 12, 0, 0, 0, time.UTC)
	hist := append(minutes("acme", now.Add(-3*time.Hour), now, 100), minutes("beta", now.Add(-3*time.Hour), now, 100)...)
	f.store(nil, hist...)
	a, b := f.detector("a"), f.detector("b")
	if n, err := a.WarmStart(f.ctx, f.st, now); err != nil || n != 2 {
		t.Fatalf("warm start of a: got %d tenants, %v; want 2", n, err)
	}
	if h, err := b.Handover(f.ctx, f.st, func(string) bool { return false }, now); err != nil || h.Adopted != 0 {
		t.Fatalf("b owning nothing: got %+v, %v; want nothing adopted", h, err)
	}

	// A 6x spike on a.
	f.store(a, minutes("acme", now, now.Add(3*time.Minute), 600)...)
	ev, fps := f.usageAlerts("acme")
	if len(ev) != 1 || ev[0] != "a firing" {
		t.Fatalf("usage alerts %v, want a firing on a", ev)
	}
	fp := fps[0]

	// acme moves to b mid-spike.
	at := now.Add(3*time.Minute + 30*time.Second)
	ha, err := a.Handover(f.ctx, f.st, not("acme"), at)
	if err != nil || ha.Dropped != 1 || ha.Adopted != 0 {
		t.Fatalf("a releasing acme: got %+v, %v; want 1 dropped", ha, err)
	}
	hb, err := b.Handover(f.ctx, f.st, only("acme"), at)
	if err != nil || hb.Adopted != 1 || hb.Dropped != 0 {
		t.Fatalf("b taking acme: got %+v, %v; want 1 adopted", hb, err)
	}
	if len(hb.Open) != 1 || hb.Open[0].Fingerprint != fp {
		t.Errorf("b's open episodes %+v, want the one of fingerprint %s", hb.Open, fp)
	}
	if !b.Open()[fp] || a.Open()[fp] {
		t.Errorf("episode %s open on b: %v, on a: %v; want b only", fp, b.Open()[fp], a.Open()[fp])
	}
	if s := a.Stats(); s.Tenants != 1 {
		t.Errorf("a holds %d tenants, want 1 (beta)", s.Tenants)
	}
	f.store(b, minutes("acme", now.Add(3*time.Minute), now.Add(5*time.Minute), 600)...)
	f.store(a, minutes("beta", now, now.Add(5*time.Minute), 100)...)

	// And back to a, still open.
	at = now.Add(5*time.Minute + 30*time.Second)
	if h, err := b.Handover(f.ctx, f.st, not("acme"), at); err != nil || h.Dropped != 1 {
		t.Fatalf("b releasing acme: got %+v, %v; want 1 dropped", h, err)
	}
	h, err := a.Handover(f.ctx, f.st, func(string) bool { return true }, at)
	if err != nil || h.Adopted != 1 || len(h.Open) != 1 || h.Open[0].Fingerprint != fp {
		t.Fatalf("a taking acme back: got %+v, %v; want 1 adopted with episode %s open", h, err, fp)
	}
	b.Advance(f.ctx, now.Add(30*time.Minute)) // b has nothing of acme left to resolve
	f.store(a, minutes("acme", now.Add(5*time.Minute), now.Add(20*time.Minute), 100)...)

	ev, fps = f.usageAlerts("acme")
	if len(ev) != 2 || ev[0] != "a firing" || ev[1] != "a resolved" {
		t.Fatalf("usage alerts %v, want a firing, then a resolved", ev)
	}
	if fps[1] != fp {
		t.Errorf("resolved under %s, want %s", fps[1], fp)
	}
	if ev, _ := f.usageAlerts("beta"); len(ev) != 0 {
		t.Errorf("beta's usage alerts %v, want none", ev)
	}
}

// TestHandoverSpendBackAndForth moves a tenant between two replicas while
// its spend climbs through every threshold: each alerts once, and each
// firing threshold is resolved once, under its fingerprint, by the
// replica that owns the tenant when the next one fires.
func TestHandoverSpendBackAndForth(t *testing.T) {
	f := newFleet(t)
	now := time.Date(2026, 3, 20, 12, 0, 0, 0, time.UTC)
	a, b := f.detector("a"), f.detector("b")
	all := func(string) bool { return true }
	none := func(string) bool { return false }
	move := func(from, to *anomaly.Detector, owns func(string) bool) {
		t.Helper()
		now = now.Add(5 * time.Minute)
		if h, err := from.Handover(f.ctx, f.st, none, now); err != nil || h.Dropped != 1 {
			t.Fatalf("release: got %+v, %v; want 1 dropped", h, err)
		}
		if h, err := to.Handover(f.ctx, f.st, owns, now); err != nil || h.Adopted != 1 {
			t.Fatalf("adopt: got %+v, %v; want 1 adopted", h, err)
		}
		from.Advance(f.ctx, now)
		to.Advance(f.ctx, now)
		if len(from.Open()) != 0 || len(to.Open()) != 1 {
			t.Errorf("open episodes after the move: got %d on the old owner, %d on the new; want 0 and 1 (the firing threshold)", len(from.Open()), len(to.Open()))
		}
	}
	if _, err := a.WarmStart(f.ctx, f.st, now); err != nil {
		t.Fatal(err)
	}
	f.spend(a, "acme", now, 75)
	move(a, b, only("acme"))
	f.spend(b, "acme", now, 20) // 95%
	move(b, a, all)
	f.spend(a, "acme", now, 10) // 105%
	move(a, b, all)
	f.spend(b, "acme", now, 5)
	move(b, a, all)
	f.checkOnce("70", "90", "100")
	ev, _ := f.spendAlerts()
	want := []string{"a firing 70", "b resolved 70", "b firing 90", "a resolved 90", "a firing 100"}
	if strings.Join(ev, ",") != strings.Join(want, ",") {
		t.Errorf("spend alerts %v, want %v", ev, want)
	}
}

// TestHandoverEpisodeOlderThanReplay: the episode opened before the
// replayed hours, so the replay sees only the spike and learns it. The new
// owner still holds it open under its recorded fingerprint and resolves it
// once the rate is back.
func TestHandoverEpisodeOlderThanReplay(t *testing.T) {
	f := newFleet(t)
	now := time.Date(2026, 3, 20, 12, 0, 0, 0, time.UTC)
	start := now.Add(-4 * time.Hour)
	f.store(nil, append(minutes("acme", now.Add(-8*time.Hour), start, 100), minutes("acme", start, now, 600)...)...)
	fp := anomaly.Fingerprint("acme", anomaly.MetricUsage, "api_request", "", start)
	if _, err := f.ch.Notify(f.ctx, []anomaly.Alert{{Fingerprint: fp, TenantID: "acme", Metric: anomaly.MetricUsage,
		Kind: "api_request", Status: anomaly.StatusFiring, Severity: anomaly.SeverityCritical, Observed: 600,
		Baseline: 100, Ratio: 6, StartsAt: start, Summary: "spike"}}); err != nil {
		t.Fatal(err)
	}
	b := f.detector("b")
	h, err := b.Handover(f.ctx, f.st, only("acme"), now)
	if err != nil || h.Adopted != 1 || len(h.Open) != 1 || h.Open[0].Fingerprint != fp {
		t.Fatalf("handover: got %+v, %v; want acme adopted with episode %s open", h, err, fp)
	}
	f.store(b, minutes("acme", now, now.Add(15*time.Minute), 100)...)
	ev, fps := f.usageAlerts("acme")
	if len(ev) != 1 || ev[0] != "b resolved" || fps[0] != fp {
		t.Fatalf("usage alerts %v %v, want one resolution by b of %s", ev, fps, fp)
	}
}

// TestHandoverUnrecordedEpisode: the replay sees a spike that no replica
// alerted (it started while none ran). The new owner does not carry the
// replay's silent episode, so no resolution of an alert nobody saw is
// sent; the spike, still on, fires live, once.
func TestHandoverUnrecordedEpisode(t *testing.T) {
	f := newFleet(t)
	now := time.Date(2026, 3, 20, 12, 0, 0, 0, time.UTC)
	f.store(nil, append(minutes("acme", now.Add(-3*time.Hour), now.Add(-3*time.Minute), 100), minutes("acme", now.Add(-3*time.Minute), now, 600)...)...)
	b := f.detector("b")
	h, err := b.Handover(f.ctx, f.st, only("acme"), now)
	if err != nil || h.Adopted != 1 || len(h.Open) != 0 {
		t.Fatalf("handover: got %+v, %v; want acme adopted, nothing open", h, err)
	}
	f.store(b, minutes("acme", now, now.Add(3*time.Minute), 600)...)
	f.store(b, minutes("acme", now.Add(3*time.Minute), now.Add(15*time.Minute), 100)...)
	ev, fps := f.usageAlerts("acme")
	if len(ev) != 2 || ev[0] != "b firing" || ev[1] != "b resolved" || fps[0] != fps[1] {
		t.Fatalf("usage alerts %v %v, want b firing then resolving one episode", ev, fps)
	}
}

// TestHandoverWhileRunning hands tenants in and out while events arrive
// and evaluations run (run it with -race): afterwards the detector holds
// exactly the owned tenants that have state.
func TestHandoverWhileRunning(t *testing.T) {
	f := newFleet(t)
	now := time.Now().UTC().Truncate(time.Minute)
	var hist []anomaly.Rollup
	for _, id := range []string{"t0", "t1", "t2", "t3"} {
		hist = append(hist, minutes(id, now.Add(-time.Hour), now, 10)...)
	}
	f.store(nil, hist...)
	d := f.detector("a")
	ctx, cancel := context.WithCancel(f.ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			d.Observe(&event.Event{ID: "x", TenantID: fmt.Sprintf("t%d", i%4), Kind: "api_request", Time: time.Now(), Quantity: 1}, 0)
		}
	})
	wg.Go(func() {
		for ctx.Err() == nil {
			d.Advance(ctx, time.Now())
			time.Sleep(time.Millisecond)
		}
	})
	even := func(id string) bool { return id == "t0" || id == "t2" }
	for i := range 6 {
		owns := even
		if i%2 == 1 {
			owns = func(id string) bool { return !even(id) }
		}
		if _, err := d.Handover(f.ctx, f.st, owns, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
	if _, err := d.Handover(f.ctx, f.st, even, time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := d.Stats().Tenants; got != 2 {
		t.Errorf("tenants held: got %d, want 2 (t0, t2)", got)
	}
}
