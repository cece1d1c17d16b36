package scaleout

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/exporter/billing"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/limiter"
)

// ackWait is collector.ack_wait in the replicas' config.
const ackWait = 5 * time.Second

// TestScaleOut runs three replicas on a 3-node NATS cluster (R3 streams
// and buckets) and two ClickHouse shards through a replica crash and the
// crash of the usage stream's leader: see the package documentation and
// docs/scale-out.md ("Tested").
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three daemons for about three minutes")
	}
	began := time.Now()
	ns := testenv.NATSClusterOf(t, 3)
	t.Logf("3-node NATS cluster up in %s", time.Since(began).Round(100*time.Millisecond))
	r := newRig(t, 3, ns.URL(), 3)
	nc := testenv.Connect(t, ns.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	took := r.waitBalanced(t, js, r.replicas, 30*time.Second)
	t.Logf("3 replicas ready %s after the test began, balanced %s later", time.Since(began).Round(100*time.Millisecond), took.Round(100*time.Millisecond))

	// Live traffic from where the seeded history ends.
	ecfg := emit.DefaultConfig()
	ecfg.Service = "scaleout-svc"
	em, err := emit.New(nc, ecfg)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(r.liveFrom))
	tr := startTraffic(em, 42)
	stopped := false
	defer func() {
		if !stopped {
			_, _ = tr.stop()
		}
	}()

	// Steady state: one owner per slot, the gauges agree (a lease renewal
	// that timed out on a loaded machine may still be moving a slot).
	time.Sleep(10 * time.Second)
	if problem := r.balanced(t, js, r.replicas); problem != "" {
		t.Logf("steady state: %s (waiting)", problem)
		r.waitBalanced(t, js, r.replicas, 20*time.Second)
	}

	// The noisy tenant's spike, until its throttle decision is live.
	spikeAt := time.Now()
	tr.setFactor(noisyID, spikeFactor)
	t.Logf("spike: %s at %.2f/s -> %.2f/s", noisyID, rateOf(noisyID), spikeFactor*rateOf(noisyID))
	kv, err := js.KeyValue(context.Background(), event.DecisionsBucket)
	if err != nil {
		t.Fatal(err)
	}
	dec := waitDecision(t, kv, noisyID, 2*time.Minute)
	t.Logf("spike -> throttle decision %.1fs: %.3g/s, anomaly %s", time.Since(spikeAt).Seconds(), dec.RatePerSec, dec.AnomalyID)

	// SIGKILL the replica owning the noisy and the capped tenant, mid-stream.
	victim := r.holderOf(t, js, noisyID)
	victim.kill(t)
	handover := r.waitConsumed(t, victim.killed, []string{noisyID, cappedID()}, 60*time.Second)
	t.Logf("SIGKILL %s (%s) at %s -> its tenants consumed by another replica in %s (lease_ttl 3s, ack_wait %s)",
		victim.name, victim.id(), victim.killed.Format("15:04:05.000"), handover.Round(10*time.Millisecond), ackWait)
	if limit := ackWait + 5*time.Second; handover > limit {
		t.Errorf("handover took %s, want at most ack_wait + 5 s = %s", handover, limit)
	}
	var live []*replica
	for _, rep := range r.replicas {
		if rep != victim {
			live = append(live, rep)
		}
	}
	r.waitBalanced(t, js, live, 30*time.Second)
	t.Logf("2 survivors hold every slot %s after the kill", (time.Since(victim.killed)).Round(100*time.Millisecond))

	time.Sleep(5 * time.Second)
	r.start(t, victim)
	r.waitReady(t, victim)
	took = r.waitBalanced(t, js, r.replicas, 30*time.Second)
	t.Logf("%s restarted as %s: ready in %s, balanced %s later", victim.name, victim.id(), victim.ready.Sub(victim.started).Round(10*time.Millisecond), took.Round(100*time.Millisecond))

	// Kill the node that leads the usage stream; bring it back 10 s later.
	leader := ns.KillStreamLeader(t, event.UsageStream)
	leaderKilled := time.Now()
	var all []string
	for _, tl := range tenants() {
		all = append(all, tl.ID)
	}
	resumed := r.waitConsumed(t, leaderKilled, all, 60*time.Second)
	t.Logf("SIGKILL of NATS node %s (the %s leader) at %s -> events stored again %s later", ns.NodeName(leader), event.UsageStream,
		leaderKilled.Format("15:04:05.000"), resumed.Round(10*time.Millisecond))
	time.Sleep(time.Until(leaderKilled.Add(10 * time.Second)))
	ns.RestartNode(t, leader)
	if problem := r.balanced(t, js, r.replicas); problem != "" {
		t.Logf("after the leader kill: %s (waiting)", problem)
	}
	took = r.waitBalanced(t, js, r.replicas, 30*time.Second)
	t.Logf("node %s back; replicas balanced", ns.NodeName(leader))

	// Run until the capped tenant reached its cap.
	full := r.waitAlert(t, func(a anomaly.Alert) bool {
		return a.TenantID == cappedID() && a.Metric == anomaly.MetricSpendCap && a.Labels["threshold"] == "100" && a.Status == anomaly.StatusFiring
	}, 3*time.Minute)
	t.Logf("%s reached its cap %s at %s", cappedID(), r.cap, full.StartsAt.Format(time.TimeOnly))
	time.Sleep(2 * time.Second)

	sentBy, err := tr.stop()
	stopped = true
	if err != nil {
		t.Fatal(err)
	}
	liveTo := time.Now().Add(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := em.Close(ctx); err != nil {
		t.Fatalf("emitter close: %v", err)
	}

	r.checkStoredOnce(t, sentBy, 2*ackWait+30*time.Second)
	r.checkAlerts(t)
	r.checkDecisions(t, kv)
	r.checkBilling(t, sentBy, liveTo)
	t.Logf("scale-out scenario took %s", time.Since(began).Round(time.Second))
}

// waitDecision waits for a live throttle decision of tenant in the bucket.
func waitDecision(t *testing.T, kv jetstream.KeyValue, tenant string, timeout time.Duration) limiter.Decision {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		e, err := kv.Get(ctx, tenant)
		cancel()
		if err == nil {
			d, derr := limiter.DecodeDecision(e.Value())
			if derr != nil {
				t.Fatalf("decision %s: %v", tenant, derr)
			}
			if d.Action == limiter.ActionThrottle {
				return d
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no throttle decision for %s after %s", tenant, timeout)
	return limiter.Decision{}
}

// waitConsumed measures the recovery from a kill at killed: the time
// until an event of one of tenants sent after the kill is stored (a
// killed replica could not have stored it).
func (r *rig) waitConsumed(t *testing.T, killed time.Time, tenants []string, timeout time.Duration) time.Duration {
	t.Helper()
	after := killed.Truncate(time.Second).Add(time.Second)
	for time.Since(killed) < timeout {
		var n uint64
		r.query(t, "SELECT count() FROM "+r.db+".events WHERE has(?, tenant_id) AND time >= ?", func(rows driver.Rows) error {
			return rows.Scan(&n)
		}, tenants, after)
		if n > 0 {
			return time.Since(killed)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no event of %v stored %s after the kill", tenants, timeout)
	return 0
}

// waitAlert waits for an alert on tenantguard.alerts.> that ok accepts.
func (r *rig) waitAlert(t *testing.T, ok func(anomaly.Alert) bool, timeout time.Duration) anomaly.Alert {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, a := range r.alerts.snapshot(t) {
			if ok(a) {
				return a
			}
		}
		for _, rep := range r.replicas {
			if rep.proc.Exited() && rep.killed.Before(rep.started) {
				t.Fatalf("%s exited:\n%s", rep.name, rep.proc.Tail())
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("alert not seen after %s", timeout)
	return anomaly.Alert{}
}

// checkStoredOnce waits until ClickHouse holds as many live events as were
// sent, then checks that each tenant and kind has every event exactly
// once, with the quantities sent.
func (r *rig) checkStoredOnce(t *testing.T, sentBy map[string]map[string]sent, timeout time.Duration) {
	t.Helper()
	var want int64
	for _, kinds := range sentBy {
		for _, s := range kinds {
			want += s.Events
		}
	}
	live := " FROM " + r.db + ".events WHERE id NOT LIKE 'seed%' AND id != 'prior-spend'"
	deadline := time.Now().Add(timeout)
	var got uint64
	for {
		r.query(t, "SELECT count()"+live, func(rows driver.Rows) error { return rows.Scan(&got) })
		if int64(got) >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	type stored struct {
		rows, ids uint64
		milli     int64
	}
	byKey := map[string]stored{}
	r.query(t, "SELECT tenant_id, kind, count(), uniqExact(id), toInt64(round(sum(quantity) * 1000))"+live+" GROUP BY tenant_id, kind",
		func(rows driver.Rows) error {
			var tenant, kind string
			var s stored
			if err := rows.Scan(&tenant, &kind, &s.rows, &s.ids, &s.milli); err != nil {
				return err
			}
			byKey[tenant+"/"+kind] = s
			return nil
		})
	var lost, dup int64
	for tenant, kinds := range sentBy {
		for kind, s := range kinds {
			st := byKey[tenant+"/"+kind]
			delete(byKey, tenant+"/"+kind)
			lost += s.Events - int64(st.ids)
			dup += int64(st.rows - st.ids)
			if int64(st.ids) != s.Events || st.rows != st.ids || st.milli != s.Milli {
				t.Errorf("%s %s: stored %d rows of %d ids, quantity %d/1000; sent %d events, quantity %d/1000",
					tenant, kind, st.rows, st.ids, st.milli, s.Events, s.Milli)
			}
		}
	}
	for k, st := range byKey {
		t.Errorf("%s: %d rows stored, none sent", k, st.rows)
	}
	t.Logf("events: %d sent, %d stored; %d lost, %d duplicated", want, got, lost, dup)
}

// checkAlerts: the noisy tenant's spike fired one usage episode, once; the
// capped tenant alerted each spend threshold once, at its true spend; no
// one else alerted, on NATS or in the anomalies table.
func (r *rig) checkAlerts(t *testing.T) {
	t.Helper()
	firing := map[string][]anomaly.Alert{} // fingerprint -> its firing notifications
	for _, a := range r.alerts.snapshot(t) {
		switch {
		case a.TenantID != noisyID && a.TenantID != cappedID():
			t.Errorf("alert %s %s of %s (%s), want alerts of %s and %s only", a.Status, a.Metric, a.TenantID, a.Summary, noisyID, cappedID())
		case a.Status == anomaly.StatusFiring:
			firing[a.Fingerprint] = append(firing[a.Fingerprint], a)
		}
	}
	var noisy, spend []string
	for fp, as := range firing {
		a := as[0]
		if len(as) != 1 {
			t.Errorf("%s %s (fingerprint %s) fired %d times, want once", a.TenantID, a.Metric, fp, len(as))
		}
		switch {
		case a.TenantID == noisyID && a.Metric == anomaly.MetricUsage:
			noisy = append(noisy, fp)
		case a.TenantID == cappedID() && a.Metric == anomaly.MetricSpendCap:
			spend = append(spend, a.Labels["threshold"])
			r.checkTrueSpend(t, a)
		default:
			t.Errorf("unexpected alert: %s %s %s (%s)", a.TenantID, a.Metric, a.Kind, a.Summary)
		}
	}
	if len(noisy) != 1 {
		t.Errorf("%s: usage episodes %v, want one", noisyID, noisy)
	}
	sort.Strings(spend)
	if want := []string{"100", "70", "90"}; !slices.Equal(spend, want) {
		t.Errorf("%s: spend thresholds alerted %v, want %v", cappedID(), spend, want)
	}
	// The anomalies table recorded the same episodes, and no other.
	var recorded []string
	r.query(t, "SELECT DISTINCT tenant_id, metric, fingerprint FROM "+r.db+".anomalies ORDER BY tenant_id, metric", func(rows driver.Rows) error {
		var tenant, metric, fp string
		if err := rows.Scan(&tenant, &metric, &fp); err != nil {
			return err
		}
		recorded = append(recorded, tenant+" "+metric)
		if len(firing[fp]) == 0 {
			t.Errorf("anomalies table: %s %s %s was never alerted on NATS", tenant, metric, fp)
		}
		return nil
	})
	t.Logf("alerts: %s usage fired once; %s spend thresholds %v each once; anomalies table: %v", noisyID, cappedID(), spend, recorded)
}

// checkTrueSpend: a spend threshold alert fired when the capped tenant's
// stored spend (the month before the test plus its live events up to the
// alert's second) was at the threshold, within 2% of the cap.
func (r *rig) checkTrueSpend(t *testing.T, a anomaly.Alert) {
	t.Helper()
	var live decimal.Decimal
	r.query(t, "SELECT toString(sum(cost)) FROM "+r.db+".events WHERE tenant_id = ? AND time >= ? AND time <= ?",
		func(rows driver.Rows) error {
			var s string
			if err := rows.Scan(&s); err != nil {
				return err
			}
			var err error
			live, err = decimal.NewFromString(s)
			return err
		}, cappedID(), r.liveFrom.Add(-time.Second), a.StartsAt)
	trueSpend, _ := r.prior.Add(live).Float64()
	capv, _ := r.cap.Float64()
	var th float64
	fmt.Sscanf(a.Labels["threshold"], "%g", &th)
	at := th / 100 * capv
	t.Logf("spend %s%%: alerted at %s with %.2f; stored spend then %.2f; threshold %.2f (cap %.2f)",
		a.Labels["threshold"], a.StartsAt.Format(time.TimeOnly), a.Observed, trueSpend, at, capv)
	if math.Abs(trueSpend-at) > 0.02*capv {
		t.Errorf("spend %s%% alerted when the stored spend was %.2f, want %.2f ± %.2f (2%% of the cap)", a.Labels["threshold"], trueSpend, at, 0.02*capv)
	}
}

// checkDecisions: the noisy tenant got one throttle decision (renewals of
// it allowed) at 2x its whole traffic's rate, the capped tenant one
// spend-cap decision, and nobody else any.
func (r *rig) checkDecisions(t *testing.T, kv jetstream.KeyValue) {
	t.Helper()
	type row struct {
		tenant, action, source, anomalyID string
		rate                              float64
	}
	var rows []row
	r.query(t, "SELECT tenant_id, action, source, anomaly_id, rate_per_sec FROM "+r.db+".decisions WHERE kv_op = 'put' "+
		"GROUP BY tenant_id, action, source, anomaly_id, rate_per_sec, kv_revision ORDER BY kv_revision", func(rs driver.Rows) error {
		var x row
		if err := rs.Scan(&x.tenant, &x.action, &x.source, &x.anomalyID, &x.rate); err != nil {
			return err
		}
		rows = append(rows, x)
		return nil
	})
	ids := map[string]map[string]bool{}
	// The tenant's whole traffic: its requests and its compute_seconds
	// events, every kind counts.
	whole := rateOf(noisyID) * (1 + computeShare)
	want := 2 * whole
	for _, x := range rows {
		if ids[x.tenant] == nil {
			ids[x.tenant] = map[string]bool{}
		}
		ids[x.tenant][x.anomalyID] = true
		switch x.tenant {
		case noisyID:
			if x.action != string(limiter.ActionThrottle) || x.source != string(limiter.SourceAnomaly) {
				t.Errorf("%s: decision %s from %s, want throttle from anomaly", noisyID, x.action, x.source)
			}
			if math.Abs(x.rate-want) > 0.15*want {
				t.Errorf("%s: throttled to %.3g/s, want 2 x its whole traffic %.3g/s = %.3g/s ± 15%%", noisyID, x.rate, whole, want)
			}
		case cappedID():
			if x.source != string(limiter.SourceSpendCap) {
				t.Errorf("%s: decision %s from %s, want from spend_cap", cappedID(), x.action, x.source)
			}
		default:
			t.Errorf("decision for %s (%s from %s), want none", x.tenant, x.action, x.source)
		}
	}
	if len(ids[noisyID]) != 1 || len(ids[cappedID()]) != 1 {
		t.Errorf("decisions by anomaly: %v, want one each for %s and %s", ids, noisyID, cappedID())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var live []string
	for k := range keys.Keys() {
		live = append(live, k)
	}
	sort.Strings(live)
	if want := []string{cappedID(), noisyID}; !slices.Equal(live, want) {
		t.Errorf("decisions bucket keys %v, want %v", live, want)
	}
	t.Logf("decisions: %d puts in the audit trail (%s throttled to 2 x %.3g/s = %.3g/s); live keys %v", len(rows), noisyID, whole, want, live)
}

// checkBilling exports [liveFrom, liveTo) with `tenantguard export billing`
// and checks every tenant's amounts, to the cent and exactly, against what
// the traffic sent.
func (r *rig) checkBilling(t *testing.T, sentBy map[string]map[string]sent, liveTo time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, "export", "billing", "--config", r.config, "--format", "json", "--no-progress",
		"--from", r.liveFrom.Format(time.RFC3339), "--to", liveTo.Truncate(time.Second).Add(time.Second).Format(time.RFC3339))
	cmd.Dir = t.TempDir()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tenantguard export billing: %v\n%s", err, stderr.String())
	}
	got := map[string]string{}   // tenant/kind -> amount
	total := map[string]string{} // tenant -> amount_rounded
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var l billing.Line
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("export line %q: %v", line, err)
		}
		switch l.LineType {
		case billing.LineUsage:
			got[l.TenantID+"/"+l.Kind] = l.Amount
		case billing.LineTenantTotal:
			total[l.TenantID] = l.AmountRounded
		}
	}
	lines := 0
	for tenant, kinds := range sentBy {
		sum := decimal.Zero
		for kind, s := range kinds {
			want := decimal.Zero
			switch {
			case tenant == cappedID() && kind == event.KindAPIRequest:
				want = cappedPrice.Mul(decimal.NewFromInt(s.Events))
			case tenant != cappedID() && kind == event.KindComputeSeconds:
				want = computePrice.Mul(decimal.NewFromInt(s.Milli)).Div(decimal.NewFromInt(1000))
			}
			sum = sum.Add(want)
			g, err := decimal.NewFromString(got[tenant+"/"+kind])
			if err != nil || !g.Equal(want) {
				t.Errorf("billing %s %s: amount %q, want %s", tenant, kind, got[tenant+"/"+kind], want)
			}
			lines++
		}
		if g, err := decimal.NewFromString(total[tenant]); err != nil || !g.Equal(sum.Round(2)) {
			t.Errorf("billing %s: total %q, want %s", tenant, total[tenant], sum.Round(2).StringFixed(2))
		}
	}
	t.Logf("billing export over 2 shards: %d usage lines of %d tenants reconcile exactly with what was sent", lines, len(sentBy))
}
