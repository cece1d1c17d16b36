package notify

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

func TestNATSSinkPublishesPerTenant(t *testing.T) {
	srv := testenv.NATS(t)
	nc := testenv.Connect(t, srv.URL)
	sub, err := nc.SubscribeSync(event.AlertSubject("acme"))
	if err != nil {
		t.Fatal(err)
	}
	all, err := nc.SubscribeSync("tenantguard.alerts.*")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.NATS.Enabled = true
	f, reg := start(t, cfg, Deps{NATS: nc})

	a := testAlert("acme")
	f.Send(context.Background(), a)
	f.Send(context.Background(), testAlert("beta"))
	f.Send(context.Background(), resolved(a))

	for i, want := range []anomaly.Status{anomaly.StatusFiring, anomaly.StatusResolved} {
		msg, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("message %d on %s: %v", i, event.AlertSubject("acme"), err)
		}
		var got anomaly.Alert
		if err := json.Unmarshal(msg.Data, &got); err != nil {
			t.Fatalf("decode: %v: %s", err, msg.Data)
		}
		if got.TenantID != "acme" || got.Status != want || got.Fingerprint != a.Fingerprint || got.Observed != a.Observed {
			t.Errorf("message %d: got %+v, want %s alert of acme", i, got, want)
		}
		if msg.Header.Get(HeaderFingerprint) != a.Fingerprint || msg.Header.Get(HeaderStatus) != string(want) {
			t.Errorf("message %d headers: got %v", i, msg.Header)
		}
	}
	if msg, err := sub.NextMsg(200 * time.Millisecond); err == nil {
		t.Errorf("acme subject got another tenant's alert: %s", msg.Data)
	}
	tenants := map[string]int{}
	for range 3 {
		msg, err := all.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		tenants[msg.Subject]++
	}
	if tenants["tenantguard.alerts.acme"] != 2 || tenants["tenantguard.alerts.beta"] != 1 {
		t.Errorf("subjects: got %v", tenants)
	}
	testenv.Eventually(t, 2*time.Second, "sent_total{nats} != 3", func() bool {
		return testenv.MetricValue(t, reg, "tenantguard_notifier_sent_total", "sink", "nats") == 3
	})
}

func TestNATSSinkRefusesBadTenantToken(t *testing.T) {
	srv := testenv.NATS(t)
	nc := testenv.Connect(t, srv.URL)
	bad := testAlert("acme")
	bad.TenantID = "acme.>"
	res, err := NewNATS(nc).Notify(context.Background(), []anomaly.Alert{bad, testAlert("ok")})
	if err == nil || res.Failed != 1 || res.Sent != 1 {
		t.Errorf("tenant %q: got %+v, err %v; want 1 failed, 1 sent", bad.TenantID, res, err)
	}
}

// anomalyRow is one row of the anomalies table.
type anomalyRow struct {
	fingerprint, tenant, metric, kind, status, severity, summary string
	observed, baseline, ratio                                    float64
	startsAt, endsAt, updatedAt                                  time.Time
}

func TestClickHouseSinkWritesAnomalies(t *testing.T) {
	st := teststore.New(t)
	db := st.Database()
	ctx := context.Background()
	cfg := testConfig()
	cfg.ClickHouse.Enabled = true
	f, reg := start(t, cfg, Deps{ClickHouse: st})

	a := testAlert("acme")
	b := testAlert("beta")
	b.Metric, b.Kind, b.Severity = anomaly.MetricLatencyP95, "", anomaly.SeverityCritical
	b.Fingerprint = anomaly.Fingerprint("beta", b.Metric, "", "", b.StartsAt)
	f.Send(ctx, a)
	f.Send(ctx, b)
	r := resolved(a)
	f.Send(ctx, r)
	testenv.Eventually(t, 10*time.Second, "3 rows not written", func() bool {
		return testenv.MetricValue(t, reg, "tenantguard_notifier_sent_total", "sink", "clickhouse") == 3
	})

	rows, err := st.Conn().Query(ctx, `SELECT fingerprint, tenant_id, metric, kind, status, severity, observed, baseline, ratio,
		starts_at, ends_at, summary, updated_at FROM `+db+`.anomalies FINAL ORDER BY tenant_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []anomalyRow
	for rows.Next() {
		var x anomalyRow
		if err := rows.Scan(&x.fingerprint, &x.tenant, &x.metric, &x.kind, &x.status, &x.severity, &x.observed,
			&x.baseline, &x.ratio, &x.startsAt, &x.endsAt, &x.summary, &x.updatedAt); err != nil {
			t.Fatal(err)
		}
		got = append(got, x)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("rows after FINAL: got %d, want 2 (acme resolved, beta firing): %+v", len(got), got)
	}
	acme, beta := got[0], got[1]
	if acme.fingerprint != a.Fingerprint || acme.status != "resolved" || acme.metric != "usage" || acme.kind != "api_request" ||
		acme.severity != "warning" || acme.observed != 930 || acme.baseline != 300 || acme.ratio != 3.1 ||
		!acme.startsAt.Equal(a.StartsAt) || !acme.endsAt.Equal(r.EndsAt) || acme.summary != a.Summary {
		t.Errorf("acme row: got %+v, want the resolved alert %+v", acme, r)
	}
	if beta.status != "firing" || beta.metric != "latency_p95" || beta.severity != "critical" || beta.endsAt.Unix() != 0 {
		t.Errorf("beta row: got %+v, want firing latency_p95 with ends_at 0", beta)
	}
	var total uint64
	if err := st.Conn().QueryRow(ctx, "SELECT count() FROM "+db+".anomalies").Scan(&total); err != nil {
		t.Fatal(err)
	}
	if total < 2 || total > 3 {
		t.Errorf("raw rows: got %d, want 2..3 (history before merges)", total)
	}
}

func TestClickHouseSinkDown(t *testing.T) {
	srv := testenv.NewClickHouseServer(t)
	st := teststore.On(t, srv, srv.NewDatabase(t))
	ctx := context.Background()
	ch := NewClickHouse(st, ClickHouseConfig{Enabled: true, MaxRetries: 1})
	ch.retry.base = 10 * time.Millisecond
	srv.Kill()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	res, err := ch.Notify(cctx, []anomaly.Alert{testAlert("acme")})
	if err == nil || res.Failed != 1 || res.Retries != 1 {
		t.Fatalf("server down: got %+v, err %v; want 1 failed after 1 retry", res, err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	// The pool must not be starved by the failed batches.
	for i := range 3 {
		if res, err := ch.Notify(cctx, []anomaly.Alert{testAlert("t" + itoa(i))}); err != nil || res.Sent != 1 {
			t.Fatalf("insert %d after restart: got %+v, err %v", i, res, err)
		}
	}
}

// TestPostgresFindingIsItsOwnAlert: a Postgres finding concerns a database,
// not a tenant. The fan-out takes it with no tenant, the NATS sink puts it
// on tenantguard.alerts._postgres, and an alert with neither a tenant nor a
// database (or both) is refused.
func TestPostgresFindingIsItsOwnAlert(t *testing.T) {
	srv := testenv.NATS(t)
	nc := testenv.Connect(t, srv.URL)
	sub, err := nc.SubscribeSync("tenantguard.alerts.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.NATS.Enabled = true
	f, _ := start(t, cfg, Deps{NATS: nc})
	pg := testAlert("")
	pg.Database, pg.Metric = "app", anomaly.MetricPGUnscoped
	both := testAlert("acme")
	both.Database = "app"
	f.Send(context.Background(), testAlert(""))
	f.Send(context.Background(), both)
	f.Send(context.Background(), pg)
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var got anomaly.Alert
	if err := json.Unmarshal(msg.Data, &got); err != nil {
		t.Fatal(err)
	}
	if msg.Subject != event.PostgresAlertSubject || got.Database != "app" || got.TenantID != "" {
		t.Errorf("got %s %+v, want the app database's finding on %s", msg.Subject, got, event.PostgresAlertSubject)
	}
	if m, err := sub.NextMsg(300 * time.Millisecond); err == nil {
		t.Errorf("an alert with no tenant and no database, or both, went out: %s", m.Data)
	}
}
