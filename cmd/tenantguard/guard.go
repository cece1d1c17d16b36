package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/anomaly/decide"
	"github.com/tenantguard/tenantguard/anomaly/notify"
	"github.com/tenantguard/tenantguard/collector/pgstat"
	"github.com/tenantguard/tenantguard/limiter"
)

// sinks sends every alert to each sink in turn; each must not block.
type sinks []anomaly.Sink

func (s sinks) Send(ctx context.Context, a anomaly.Alert) {
	for _, sink := range s {
		sink.Send(ctx, a)
	}
}

// activeAlerts tracks firing alerts per tenant for the metrics gauge and
// the demo's live table.
type activeAlerts struct {
	mu      sync.Mutex
	firing  map[string]map[string]string // tenant -> fingerprint -> metric
	onCount func(tenant string, n int)
}

func newActiveAlerts(onCount func(string, int)) *activeAlerts {
	return &activeAlerts{firing: map[string]map[string]string{}, onCount: onCount}
}

func (t *activeAlerts) Send(_ context.Context, a anomaly.Alert) {
	t.mu.Lock()
	m := t.firing[a.TenantID]
	if a.Status == anomaly.StatusFiring {
		if m == nil {
			m = map[string]string{}
			t.firing[a.TenantID] = m
		}
		m[a.Fingerprint] = a.Metric
	} else {
		delete(m, a.Fingerprint)
		if len(m) == 0 {
			delete(t.firing, a.TenantID)
		}
	}
	n := len(m)
	t.mu.Unlock()
	if t.onCount != nil {
		t.onCount(a.TenantID, n)
	}
}

// Status lists a tenant's firing metrics, e.g. "ALERT usage,cost".
func (t *activeAlerts) Status(tenant string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.firing[tenant]
	if len(m) == 0 {
		return ""
	}
	seen := map[string]bool{}
	var metrics []string
	for _, metric := range m {
		if !seen[metric] {
			seen[metric] = true
			metrics = append(metrics, metric)
		}
	}
	sort.Strings(metrics)
	return "ALERT " + strings.Join(metrics, ",")
}

// alertSink returns the daemon's alert fan-out (Alertmanager, webhook,
// NATS, ClickHouse), built on first use and run as a service of d.
func (d *daemon) alertSink(nc *nats.Conn) (*notify.Fanout, error) {
	if d.fanout != nil {
		return d.fanout, nil
	}
	fan, err := notify.New(d.a.cfg.Alerts, notify.Deps{
		Logger: d.a.log, Registerer: d.reg, NATS: nc,
		ClickHouse: d.store.Conn(), Database: d.store.Database(),
	})
	if err != nil {
		return nil, fmt.Errorf("alerts: %w", err)
	}
	d.fanout = fan
	d.services = append(d.services, fan.Run)
	d.closers = append(d.closers, fan.Close)
	return fan, nil
}

// startAnomaly builds the detector, warm-starts its baselines from
// ClickHouse, and registers it as a service of d.
func startAnomaly(ctx context.Context, d *daemon, nc *nats.Conn, extra ...anomaly.Sink) (*anomaly.Detector, *activeAlerts, error) {
	a := d.a
	acfg, err := a.anomalyConfig()
	if err != nil {
		return nil, nil, err
	}
	fan, err := d.alertSink(nc)
	if err != nil {
		return nil, nil, err
	}
	var onCount func(string, int)
	if d.metrics != nil {
		onCount = d.metrics.SetActiveAnomalies
	}
	active := newActiveAlerts(onCount)
	all := append(sinks{fan, active}, extra...)
	det, err := anomaly.New(acfg, all, anomaly.WithLogger(a.log))
	if err != nil {
		return nil, nil, err
	}
	if acfg.WarmStart.Enabled {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		n, err := det.WarmStart(wctx, d.store.Conn(), d.store.Database(), time.Now())
		cancel()
		if err != nil {
			// A cold start is worse than a warm one, not fatal: baselines learn.
			a.log.Warn("anomaly warm start failed; starting cold", "component", "anomaly", "err", err)
		} else {
			a.log.Info("anomaly baselines warm-started", "component", "anomaly", "count", n)
		}
	} else {
		a.log.Info("anomaly warm start off; baselines start cold", "component", "anomaly")
	}
	d.services = append(d.services, det.Run)
	d.closers = append(d.closers, det.Close)
	return det, active, nil
}

// pgAlerter turns a new unscoped Postgres statement into an alert on every
// sink. Findings belong to a database, not a tenant, so the alert's tenant
// is the fixed id "pg-audit" and the database and queryid are labels.
type pgAlerter struct{ sink anomaly.Sink }

func (p pgAlerter) NewUnscoped(ctx context.Context, f pgstat.Finding) error {
	now := time.Now().UTC()
	p.sink.Send(ctx, anomaly.Alert{
		Fingerprint: anomaly.Fingerprint("pg-audit", "pg_unscoped", f.Database, strconv.FormatInt(f.QueryID, 10), time.Time{}),
		TenantID:    "pg-audit",
		Metric:      "pg_unscoped",
		Status:      anomaly.StatusFiring,
		Severity:    anomaly.SeverityCritical,
		StartsAt:    now,
		Summary:     fmt.Sprintf("database %s: role %s ran a statement on %s with no tenant filter: %.200s", f.Database, f.Role, strings.Join(f.Tables, ", "), f.Query),
		Labels:      map[string]string{"database": f.Database, "queryid": strconv.FormatInt(f.QueryID, 10), "role": f.Role},
	})
	return nil
}

// startPGStat runs the Postgres auditor, writing findings to ClickHouse.
// Its gauge lives in its own registry, gathered beside the daemon's.
func startPGStat(d *daemon, nc *nats.Conn) error {
	w, err := pgstat.NewClickHouseWriter(d.store.Conn(), d.store.Database())
	if err != nil {
		return err
	}
	fan, err := d.alertSink(nc)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	pc := d.a.cfg.PGStat
	stage, err := pgstat.New(pc, pgstat.WithWriter(w), pgstat.WithAlerter(pgAlerter{fan}),
		pgstat.WithStatementRetention(pc.StatementRetention, pc.MaxTrackedStatements),
		pgstat.WithRegisterer(reg), pgstat.WithLogger(d.a.log))
	if err != nil {
		return err
	}
	d.gatherers = append(d.gatherers, reg)
	d.services = append(d.services, stage.Run)
	d.closers = append(d.closers, stage.Close)
	return nil
}

// checkSigningKey fails at once when decisions are on and the signing key
// is unreadable, before the daemon waits for NATS or ClickHouse. Without
// decisions.signing_key_file the default key is used, made on first use.
func checkSigningKey(a *app) error {
	if !a.cfg.Decisions.Enabled {
		return nil
	}
	path, err := a.signingKeyFile(true)
	if err != nil {
		return err
	}
	a.cfg.Decisions.SigningKeyFile = path
	_, err = limiter.LoadSigner(path)
	return err
}

// decisionsPublisher returns the daemon's signing publisher, built on
// first use: the engine writes through it and the audit trail verifies
// with its keys.
func decisionsPublisher(ctx context.Context, d *daemon, nc *nats.Conn) (*limiter.Publisher, error) {
	if d.decisions != nil {
		return d.decisions, nil
	}
	pub, err := d.a.newPublisher(ctx, nc, limiter.DefaultConfig().PresenceTTL, true)
	if err != nil {
		return nil, fmt.Errorf("decisions: %w", err)
	}
	d.decisions = pub
	return pub, nil
}

// startDecisions runs the decision engine that turns alerts into throttle
// and circuit decisions in the KV bucket, and returns it as an alert sink.
func startDecisions(ctx context.Context, d *daemon, nc *nats.Conn) (anomaly.Sink, error) {
	pub, err := decisionsPublisher(ctx, d, nc)
	if err != nil {
		return nil, err
	}
	eng, err := decide.New(d.a.cfg.Decisions.Config, decide.Deps{Publisher: pub, Registerer: d.reg, Logger: d.a.log})
	if err != nil {
		return nil, err
	}
	d.services = append(d.services, eng.Run, func(ctx context.Context) error { return watchDecisions(ctx, d, pub) })
	d.closers = append(d.closers, eng.Close)
	return eng, nil
}

// startDecisionsAudit runs the trail that records every revision of the
// decisions bucket, whoever wrote it, in the ClickHouse decisions table.
func startDecisionsAudit(ctx context.Context, d *daemon, nc *nats.Conn) error {
	pub, err := decisionsPublisher(ctx, d, nc)
	if err != nil {
		return err
	}
	rec, err := decide.NewClickHouseRecorder(d.store.Conn(), d.store.Database())
	if err != nil {
		return err
	}
	tr, err := decide.NewTrail(d.a.cfg.Decisions.Config, decide.TrailDeps{Conn: nc, Recorder: rec,
		Verifier: pub.Verifier(), Registerer: d.reg, Logger: d.a.log})
	if err != nil {
		return err
	}
	d.services = append(d.services, tr.Run)
	d.closers = append(d.closers, tr.Close)
	return nil
}

// watchDecisions refreshes the throttled gauge and the live view's status
// from the live decisions (automatic and manual) every two seconds.
func watchDecisions(ctx context.Context, d *daemon, pub *limiter.Publisher) error {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	shown := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		list, err := pub.List(lctx, false)
		cancel()
		if err != nil {
			continue
		}
		now := map[string]string{}
		for _, dec := range list {
			switch dec.Action {
			case limiter.ActionThrottle, limiter.ActionShed:
				now[dec.TenantID] = fmt.Sprintf("THROTTLED %.0f/s", dec.RatePerSec)
			case limiter.ActionOpenCircuit:
				if _, ok := now[dec.TenantID]; !ok {
					now[dec.TenantID] = "CIRCUIT OPEN " + dec.Scope
				}
			}
		}
		d.guardMu.Lock()
		d.guard = now
		d.guardMu.Unlock()
		if d.metrics != nil {
			for tenant := range shown {
				if _, ok := now[tenant]; !ok {
					d.metrics.SetThrottled(tenant, false)
					delete(shown, tenant)
				}
			}
			for tenant := range now {
				d.metrics.SetThrottled(tenant, true)
				shown[tenant] = true
			}
		}
	}
}

// guardStatus joins a tenant's decision and alert status for the live view.
func (d *daemon) guardStatus(alerts *activeAlerts) func(string) string {
	return func(tenant string) string {
		d.guardMu.Lock()
		g := d.guard[tenant]
		d.guardMu.Unlock()
		a := ""
		if alerts != nil {
			a = alerts.Status(tenant)
		}
		return strings.TrimSpace(g + "  " + a)
	}
}
