package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/anomaly/notify"
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

// startAnomaly builds the detector and its notifiers, warm-starts the
// baselines from ClickHouse, and registers both as services of d.
func startAnomaly(ctx context.Context, d *daemon, nc *nats.Conn, extra ...anomaly.Sink) (*anomaly.Detector, *activeAlerts, error) {
	a := d.a
	acfg, err := a.anomalyConfig()
	if err != nil {
		return nil, nil, err
	}
	fan, err := notify.New(a.cfg.Alerts, notify.Deps{
		Logger: a.log, Registerer: d.reg, NATS: nc,
		ClickHouse: d.store.Conn(), Database: d.store.Database(),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("alerts: %w", err)
	}
	var onCount func(string, int)
	if d.metrics != nil {
		onCount = d.metrics.SetActiveAnomalies
	}
	active := newActiveAlerts(onCount)
	all := append(sinks{fan, active}, extra...)
	det, err := anomaly.New(acfg, all, anomaly.WithLogger(a.log))
	if err != nil {
		fan.Close()
		return nil, nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	n, err := det.WarmStart(wctx, d.store.Conn(), d.store.Database(), time.Now())
	cancel()
	if err != nil {
		// A cold start is worse than a warm one, not fatal: baselines learn.
		a.log.Warn("anomaly warm start failed; starting cold", "component", "anomaly", "err", err)
	} else {
		a.log.Info("anomaly baselines warm-started", "component", "anomaly", "count", n)
	}
	d.services = append(d.services, fan.Run, det.Run)
	d.closers = append(d.closers, det.Close, fan.Close)
	return det, active, nil
}
