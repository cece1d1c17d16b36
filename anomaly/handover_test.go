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
	b, err := f.st.Conn().PrepareBatch(f.ctx, "INSERT INTO "+f.db+".usage_1m (tenant_id, kind, minute, count, quantity, cost, errors, latency_count)")
	if err != nil {
		f.t.Fatal(err)
	}
	if err := b.Append(tenant, "api_request", m, uint64(1), 1.0, decimal.NewFromFloat(cost), uint64(0), uint64(0)); err != nil {
		b.Abort()
		f.t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		f.t.Fatal(err)
	}
	if d != nil {
		d.ObserveRollup(&anomaly.Rollup{Minute: m, TenantID: tenant, Kind: "api_request", Count: 1, Quantity: 1, Cost: cost})
		// A live detector evaluates on its own clock, not on minute
		// boundaries.
		d.Advance(f.ctx, m.Add(time.Minute+f.cfg.Lateness+7*time.Second))
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
