package advisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/collector/store"
)

// Episodes reads the heavy_tenant episodes still firing, so a restarted
// advisor resumes them instead of raising them again; *store.Store is one.
type Episodes interface {
	FiringAnomalies(ctx context.Context, metric string) ([]store.AnomalyRow, error)
}

var _ Episodes = (*store.Store)(nil)

// Deps are the Advisor's collaborators.
type Deps struct {
	// Source is required.
	Source Source
	// Sink receives heavy_tenant alerts from Evaluate and Run; nil raises
	// none (a report-only advisor, as the API and `advise` use).
	Sink anomaly.Sink
	// Episodes, when set, resumes firing episodes at the first Evaluate.
	Episodes Episodes
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Advisor reports each tenant's share of the pooled resources and raises
// a heavy_tenant alert while a tenant is heavy.
type Advisor struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	mu      sync.Mutex
	resumed bool
	firing  map[string]anomaly.Alert // by tenant

	closeOnce sync.Once
	closed    chan struct{}
}

// New validates cfg and returns an Advisor.
func New(cfg Config, deps Deps) (*Advisor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Source == nil {
		return nil, errors.New("advisor: Source is required")
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Advisor{cfg: cfg, deps: deps, log: log.With("component", "advisor"),
		firing: map[string]anomaly.Alert{}, closed: make(chan struct{})}, nil
}

// Config returns the advisor's settings.
func (a *Advisor) Config() Config { return a.cfg }

// Report judges every tenant over [from, to), widened to whole hours.
// A range that is empty or longer than MaxRange is ErrRange.
func (a *Advisor) Report(ctx context.Context, from, to time.Time) (Report, error) {
	return a.cfg.Report(ctx, a.deps.Source, from, to)
}

// Fingerprint is the heavy_tenant fingerprint of tenant: one per tenant,
// the same across episodes, restarts and replicas.
func Fingerprint(tenant string) string {
	return anomaly.Fingerprint(tenant, anomaly.MetricHeavyTenant, "", "", time.Time{})
}

// Evaluate judges the window ending at the last complete hour before now,
// fires a heavy_tenant alert for each tenant that became heavy and
// resolves the episode of each that no longer is. It returns the report.
func (a *Advisor) Evaluate(ctx context.Context, now time.Time) (Report, error) {
	from, to := a.cfg.LastWindow(now)
	r, err := a.Report(ctx, from, to)
	if err != nil {
		return r, err
	}
	if a.deps.Sink == nil {
		return r, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.resumed && a.deps.Episodes != nil {
		rows, err := a.deps.Episodes.FiringAnomalies(ctx, anomaly.MetricHeavyTenant)
		if err != nil {
			return r, fmt.Errorf("resume heavy_tenant episodes: %w", err)
		}
		for _, row := range rows {
			a.firing[row.TenantID] = anomaly.Alert{Fingerprint: row.Fingerprint, TenantID: row.TenantID,
				Metric: row.Metric, Status: anomaly.StatusFiring, Severity: anomaly.Severity(row.Severity),
				Observed: row.Observed, Baseline: row.Baseline, Ratio: row.Ratio, StartsAt: row.StartsAt, Summary: row.Summary}
		}
		if len(rows) > 0 {
			a.log.Info("resumed heavy_tenant episodes", "count", len(rows))
		}
	}
	a.resumed = true
	heavy := map[string]bool{}
	for _, t := range r.Tenants {
		if t.Recommendation != MoveToDedicated {
			continue
		}
		heavy[t.TenantID] = true
		if _, open := a.firing[t.TenantID]; open {
			continue
		}
		alert := a.alert(t, r, now)
		a.firing[t.TenantID] = alert
		a.deps.Sink.Send(ctx, alert)
		a.log.Info("heavy tenant", "tenant", t.TenantID, "resource", t.Resource, "reason", t.Reason)
	}
	for tenant, alert := range a.firing {
		if heavy[tenant] {
			continue
		}
		alert.Status, alert.EndsAt = anomaly.StatusResolved, now.UTC()
		delete(a.firing, tenant)
		a.deps.Sink.Send(ctx, alert)
		a.log.Info("tenant no longer heavy", "tenant", tenant)
	}
	return r, nil
}

// alert is the firing heavy_tenant alert of t.
func (a *Advisor) alert(t Advice, r Report, now time.Time) anomaly.Alert {
	var u Usage
	for _, x := range t.Resources {
		if x.Resource == t.Resource {
			u = x
		}
	}
	return anomaly.Alert{
		Fingerprint: Fingerprint(t.TenantID),
		TenantID:    t.TenantID,
		Metric:      anomaly.MetricHeavyTenant,
		Status:      anomaly.StatusFiring,
		Severity:    anomaly.SeverityWarning,
		Observed:    u.Share,
		Baseline:    r.Thresholds.Share,
		Ratio:       ratio(u.Share, r.Thresholds.Share),
		StartsAt:    now.UTC(),
		Summary:     fmt.Sprintf("tenant %s is heavy, move to dedicated: %s", t.TenantID, t.Reason),
		Labels:      map[string]string{anomaly.LabelResource: t.Resource, anomaly.LabelRecommendation: t.Recommendation},
	}
}

// Run evaluates at once and then every advisor.interval until ctx ends or
// Close; it returns nil then. A failed evaluation is logged and retried at
// the next tick.
func (a *Advisor) Run(ctx context.Context) error {
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	for {
		start := time.Now()
		r, err := a.Evaluate(ctx, start)
		switch {
		case err != nil && ctx.Err() == nil:
			a.log.Warn("advisor evaluation failed", "err", err)
		case err == nil:
			a.log.Debug("advisor evaluated", "count", len(r.Tenants), "heavy", r.Heavy, "duration", time.Since(start))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.closed:
			return nil
		case <-t.C:
		}
	}
}

// Close stops Run; it is idempotent.
func (a *Advisor) Close() error {
	a.closeOnce.Do(func() { close(a.closed) })
	return nil
}
