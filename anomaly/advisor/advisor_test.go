package advisor

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// end is the end of the seeded week; the advisor judges it at now.
var (
	end   = time.Date(2026, 11, 8, 0, 0, 0, 0, time.UTC)
	start = end.Add(-168 * time.Hour)
	now   = end.Add(30 * time.Minute)
)

// seedWeek stores a week of hourly traffic through InsertEvents, so
// usage_1m fills through its materialized view. Every hour:
//   - whale: 6 api_request and 1 db_query of 400 ms, 1 compute second;
//   - n1: 2 api_request, 1 db_query of 20 ms, 3 compute seconds (one event);
//   - n2..n5: 2 api_request and 1 db_query of 20 ms each;
//   - riser, in the last 24 hours only: 8 api_request.
//
// So each hour whale has 8 of 24 events (of 32 in the last day), 400 of 500
// db_query ms; n1 has 3 of 4 compute seconds; riser's share rises.
func seedWeek(t *testing.T, st *store.Store) {
	t.Helper()
	var rows []store.Row
	unit := decimal.RequireFromString("0.001")
	add := func(tenant, kind string, at time.Time, qty, latency float64) {
		rows = append(rows, store.Row{
			Event: &event.Event{ID: fmt.Sprintf("%s-%d", tenant, len(rows)), TenantID: tenant, Kind: kind, Time: at,
				Quantity: qty, LatencyMs: latency, StatusCode: 200},
			Plan: "pro", UnitPrice: unit, Cost: unit.Mul(decimal.NewFromFloat(qty)), PriceVersion: "v1"})
	}
	for h := start; h.Before(end); h = h.Add(time.Hour) {
		at := func(i int) time.Time { return h.Add(time.Duration(i) * time.Minute) }
		for i := 0; i < 6; i++ {
			add("whale", event.KindAPIRequest, at(i), 1, 10)
		}
		add("whale", event.KindDBQuery, at(7), 1, 400)
		add("whale", event.KindComputeSeconds, at(8), 1, 0)
		for n := 1; n <= 5; n++ {
			tenant := fmt.Sprintf("n%d", n)
			add(tenant, event.KindAPIRequest, at(10+n), 1, 10)
			add(tenant, event.KindAPIRequest, at(20+n), 1, 10)
			add(tenant, event.KindDBQuery, at(30+n), 1, 20)
		}
		add("n1", event.KindComputeSeconds, at(40), 3, 0)
		if !h.Before(end.Add(-24 * time.Hour)) {
			for i := 0; i < 8; i++ {
				add("riser", event.KindAPIRequest, at(45+i), 1, 10)
			}
		}
	}
	if err := st.InsertEvents(context.Background(), rows, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func near(got, want float64) bool { return math.Abs(got-want) < 1e-9 }

func find(t *testing.T, r Report, tenant string) Advice {
	t.Helper()
	for _, a := range r.Tenants {
		if a.TenantID == tenant {
			return a
		}
	}
	t.Fatalf("tenant %s not in the report", tenant)
	return Advice{}
}

func usage(a Advice, resource string) Usage {
	for _, u := range a.Resources {
		if u.Resource == resource {
			return u
		}
	}
	return Usage{}
}

func TestReportFindsTheHeavyTenantWithItsShares(t *testing.T) {
	st := teststore.New(t)
	seedWeek(t, st)
	adv, err := New(DefaultConfig(), Deps{Source: st})
	if err != nil {
		t.Fatal(err)
	}
	from, to := DefaultConfig().LastWindow(now)
	r, err := adv.Report(context.Background(), from, to)
	if err != nil {
		t.Fatal(err)
	}
	if !r.From.Equal(start) || !r.To.Equal(end) || r.Hours != 168 || !r.TrendFrom.Equal(end.Add(-24*time.Hour)) {
		t.Fatalf("got range %s..%s, %d hours, trend from %s; want %s..%s, 168, %s", r.From, r.To, r.Hours, r.TrendFrom, start, end, end.Add(-24*time.Hour))
	}
	if got, want := len(r.Tenants), 7; got != want {
		t.Fatalf("got %d tenants, want %d", got, want)
	}
	if r.Heavy != 2 || r.Watched != 1 {
		t.Errorf("got %d heavy and %d to watch, want 2 and 1", r.Heavy, r.Watched)
	}
	pool := map[string]float64{ResourceEvents: 24*168 + 8*24, ResourceDBQueryMs: 500 * 168, ResourceComputeSeconds: 4 * 168}
	for k, want := range pool {
		if got := r.Pool[k]; !near(got, want) {
			t.Errorf("pool %s: got %v, want %v", k, got, want)
		}
	}

	whale := find(t, r, "whale")
	if whale.Recommendation != MoveToDedicated || whale.Resource != ResourceEvents {
		t.Errorf("whale: got %s on %s, want move_to_dedicated on events", whale.Recommendation, whale.Resource)
	}
	ev := usage(whale, ResourceEvents)
	if !near(ev.Share, 8*168/float64(24*168+8*24)) || ev.HoursOver != 168 || !near(ev.HoursOverFraction, 1) ||
		!near(ev.RecentShare, 8.0/32) || !near(ev.MaxHourShare, 8.0/24) {
		t.Errorf("whale events: got %+v", ev)
	}
	db := usage(whale, ResourceDBQueryMs)
	if !near(db.Used, 400*168) || !near(db.Share, 0.8) || db.HoursOver != 168 || db.Trend != TrendFlat {
		t.Errorf("whale db_query_ms: got %+v, want 67200 ms, share 0.8 in all 168 hours, flat", db)
	}
	if !strings.Contains(whale.Reason, "over 20.0% of the pool in 168 of 168 hours") {
		t.Errorf("whale reason: %q", whale.Reason)
	}

	n1 := find(t, r, "n1")
	if cs := usage(n1, ResourceComputeSeconds); n1.Recommendation != MoveToDedicated || n1.Resource != ResourceComputeSeconds ||
		!near(cs.Share, 0.75) || cs.HoursOver != 168 {
		t.Errorf("n1: got %s on %s, compute %+v; want move_to_dedicated on compute_seconds at 0.75", n1.Recommendation, n1.Resource, cs)
	}

	riser := find(t, r, "riser")
	if ev := usage(riser, ResourceEvents); riser.Recommendation != Watch || ev.Trend != TrendUp || ev.HoursOver != 24 ||
		!near(ev.RecentShare, 8.0/32) {
		t.Errorf("riser: got %s, events %+v; want watch, trend up, 24 hours over", riser.Recommendation, ev)
	}
	for _, n := range []string{"n2", "n3", "n4", "n5"} {
		a := find(t, r, n)
		if a.Recommendation != None || a.Reason != "" {
			t.Errorf("%s: got %s (%q), want none", n, a.Recommendation, a.Reason)
		}
		if ev := usage(a, ResourceEvents); ev.HoursOver != 0 || !near(ev.MaxHourShare, 3.0/24) {
			t.Errorf("%s events: got %+v", n, ev)
		}
	}
	if r.Tenants[0].Recommendation != MoveToDedicated || r.Tenants[2].TenantID != "riser" {
		t.Errorf("order: got %s, %s, %s first", r.Tenants[0].TenantID, r.Tenants[1].TenantID, r.Tenants[2].TenantID)
	}
}

// A stricter sustained share or a higher share changes the verdict: the
// thresholds are read, not hard-wired.
func TestReportFollowsTheThresholds(t *testing.T) {
	st := teststore.New(t)
	seedWeek(t, st)
	for _, tc := range []struct {
		name  string
		cfg   func(*Config)
		heavy []string
	}{
		{"defaults", func(*Config) {}, []string{"whale", "n1"}},
		{"share 0.3", func(c *Config) { c.Share = 0.3 }, []string{"whale", "n1"}}, // whale's db share (0.8) still counts
		{"share 0.8", func(c *Config) { c.Share = 0.8 }, nil},                     // nobody strictly above 0.8
		{"last day only", func(c *Config) { c.Window, c.Trend = 24*time.Hour, 6*time.Hour }, []string{"whale", "n1", "riser"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.cfg(&cfg)
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			from, to := cfg.LastWindow(now)
			r, err := cfg.Report(context.Background(), st, from, to)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, a := range r.Tenants {
				if a.Recommendation == MoveToDedicated {
					got = append(got, a.TenantID)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.heavy, ",") {
				t.Errorf("got heavy %v, want %v", got, tc.heavy)
			}
		})
	}
}

// recordingSink stores alerts in the anomalies table, as the ClickHouse
// sink does, and remembers them.
type recordingSink struct {
	anomaly.Recorder
	st *store.Store
	t  *testing.T
}

func (s *recordingSink) Send(ctx context.Context, a anomaly.Alert) {
	s.Recorder.Send(ctx, a)
	ends := time.Unix(0, 0).UTC()
	if !a.EndsAt.IsZero() {
		ends = a.EndsAt
	}
	err := s.st.InsertAnomalies(ctx, []store.AnomalyRow{{Fingerprint: a.Fingerprint, TenantID: a.TenantID, Metric: a.Metric,
		Status: string(a.Status), Severity: string(a.Severity), Observed: a.Observed, Baseline: a.Baseline, Ratio: a.Ratio,
		StartsAt: a.StartsAt, EndsAt: ends, Summary: a.Summary, UpdatedAt: time.Now().UTC()}})
	if err != nil {
		s.t.Error(err)
	}
}

func TestHeavyTenantAlertFiresOnceAndResolves(t *testing.T) {
	st := teststore.New(t)
	seedWeek(t, st)
	ctx := context.Background()
	sink := &recordingSink{st: st, t: t}
	adv, err := New(DefaultConfig(), Deps{Source: st, Sink: sink, Episodes: st})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adv.Evaluate(ctx, now); err != nil {
		t.Fatal(err)
	}
	got := sink.Alerts()
	if len(got) != 2 {
		t.Fatalf("got %d alerts, want 2 (whale and n1): %+v", len(got), got)
	}
	fired := map[string]anomaly.Alert{}
	for _, a := range got {
		fired[a.TenantID] = a
		if a.Metric != anomaly.MetricHeavyTenant || a.Status != anomaly.StatusFiring || a.Fingerprint != Fingerprint(a.TenantID) {
			t.Errorf("got %+v, want a firing heavy_tenant alert with the tenant's fingerprint", a)
		}
	}
	if w := fired["whale"]; !near(w.Observed, 8*168/float64(24*168+8*24)) || w.Labels[anomaly.LabelResource] != ResourceEvents ||
		!strings.Contains(w.Summary, "move to dedicated") {
		t.Errorf("whale alert: got %+v", w)
	}

	// An hour later the tenants are still heavy: nothing new.
	if _, err := adv.Evaluate(ctx, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n := len(sink.Alerts()); n != 2 {
		t.Fatalf("got %d alerts after a second run, want still 2", n)
	}

	// A restarted advisor resumes the open episodes from the anomalies
	// table instead of firing them again.
	restarted, err := New(DefaultConfig(), Deps{Source: st, Sink: sink, Episodes: st})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := restarted.Evaluate(ctx, now.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n := len(sink.Alerts()); n != 2 {
		t.Fatalf("got %d alerts after a restart, want still 2", n)
	}

	// Two days on, the window holds 120 hours of traffic: 71% < 80%.
	later := now.Add(48 * time.Hour)
	if _, err := restarted.Evaluate(ctx, later); err != nil {
		t.Fatal(err)
	}
	all := sink.Alerts()
	if len(all) != 4 {
		t.Fatalf("got %d alerts, want 2 firing then 2 resolved", len(all))
	}
	for _, a := range all[2:] {
		f := fired[a.TenantID]
		if a.Status != anomaly.StatusResolved || a.Fingerprint != f.Fingerprint || !a.StartsAt.Equal(f.StartsAt) || !a.EndsAt.Equal(later.UTC()) {
			t.Errorf("got %+v, want the resolution of %+v at %s", a, f, later)
		}
	}
	open, err := st.FiringAnomalies(ctx, anomaly.MetricHeavyTenant)
	if err != nil || len(open) != 0 {
		t.Fatalf("firing heavy_tenant rows after resolution: %v %+v", err, open)
	}
	if _, err := restarted.Evaluate(ctx, later.Add(time.Hour)); err != nil || len(sink.Alerts()) != 4 {
		t.Fatalf("a run after the resolution: %v, %d alerts, want 4", err, len(sink.Alerts()))
	}
}

func TestReportRejectsBadRanges(t *testing.T) {
	cfg := DefaultConfig()
	for _, tc := range []struct{ from, to time.Time }{
		{end, end},
		{end, start},
		{start.Add(-MaxRange), end},
	} {
		if _, err := cfg.Report(context.Background(), nil, tc.from, tc.to); err == nil || !strings.Contains(err.Error(), "bad range") {
			t.Errorf("%s..%s: got %v, want ErrRange", tc.from, tc.to, err)
		}
	}
	if f, to := AlignRange(start.Add(10*time.Minute), end.Add(time.Second)); !f.Equal(start) || !to.Equal(end.Add(time.Hour)) {
		t.Errorf("AlignRange: got %s..%s", f, to)
	}
}

func TestConfigValidateNamesEveryBadField(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		set  func(*Config)
		want string
	}{
		{func(c *Config) { c.Share = 1 }, "advisor.share: must be in (0, 1)"},
		{func(c *Config) { c.Share = math.NaN() }, "advisor.share: must be in (0, 1)"},
		{func(c *Config) { c.Sustained = 0 }, "advisor.sustained: must be in (0, 1]"},
		{func(c *Config) { c.Watch = 0.9 }, "advisor.watch: must be at most advisor.sustained"},
		{func(c *Config) { c.Window = 90 * time.Minute }, "advisor.window: must be whole hours"},
		{func(c *Config) { c.Trend = 200 * time.Hour }, "advisor.trend: must be at most advisor.window"},
		{func(c *Config) { c.TrendFactor = 1 }, "advisor.trend_factor: must be > 1"},
		{func(c *Config) { c.Interval = time.Second }, "advisor.interval: must be from 1m to 24h"},
	} {
		c := DefaultConfig()
		tc.set(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}
