package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/anomaly/decide"
	"github.com/tenantguard/tenantguard/exporter/metrics"
)

// detectorHandover moves tenant state in and out of the detector;
// *anomaly.Detector is one.
type detectorHandover interface {
	Handover(ctx context.Context, src anomaly.WarmStartReader, owns func(string) bool, now time.Time) (anomaly.Handed, error)
	Release(owns func(string) bool) int
	Open() map[string]bool
}

// engineHandover moves decision authority in and out of the engine;
// *decide.Engine is one.
type engineHandover interface {
	Handover(ctx context.Context, owns func(string) bool) (decide.Handed, error)
	Handle(ctx context.Context, a anomaly.Alert) error
}

// gaugeOwner keeps per-tenant gauges to the owned tenants;
// *metrics.Metrics is one.
type gaugeOwner interface {
	Forget(owns func(string) bool)
}

var (
	_ detectorHandover = (*anomaly.Detector)(nil)
	_ engineHandover   = (*decide.Engine)(nil)
	_ gaugeOwner       = (*metrics.Metrics)(nil)
)

// handover moves per-tenant state as the replica's owned set of tenants
// changes: the collector calls Owned before it consumes newly owned
// tenants and after released ones stopped. Each part is nil when its
// stage is off.
type handover struct {
	det    detectorHandover
	src    anomaly.WarmStartReader // where the detector warm-starts from; nil: new tenants start cold
	eng    engineHandover
	gauges gaugeOwner
	view   *guardView // the per-tenant alert view; may be nil
	log    *slog.Logger
	now    func() time.Time // nil: time.Now
}

// Owned hands tenants over: first the detector (released tenants dropped
// with their episodes left open, new ones warm-started with theirs), so
// that the alert view and the engine see the episodes it continues; then
// the engine (released decisions left live for the new owner, the new
// tenants' live decisions adopted); then the gauges. An adopted decision
// whose episode the detector did not find open is resolved at once, so
// no decision is renewed without an episode behind it. Every part runs
// even when one fails; the errors are joined. When nothing was gained
// the detector only drops, reading nothing from ClickHouse.
func (h *handover) Owned(ctx context.Context, owns func(tenant string) bool, gained bool) error {
	if owns == nil {
		return errors.New("handover: nil owns")
	}
	now := time.Now
	if h.now != nil {
		now = h.now
	}
	start := now()
	var errs []error
	var dh anomaly.Handed
	detOK := false
	switch {
	case h.det != nil && (!gained || h.src == nil):
		dh.Dropped = h.det.Release(owns)
		detOK = true
	case h.det != nil:
		var err error
		dh, err = h.det.Handover(ctx, h.src, owns, start)
		if err != nil {
			errs = append(errs, fmt.Errorf("detector: %w", err))
		} else {
			detOK = true
		}
	}
	if h.view != nil {
		h.view.own(ctx, owns, dh.Open)
	}
	var eh decide.Handed
	if h.eng != nil {
		var err error
		eh, err = h.eng.Handover(ctx, owns)
		if err != nil {
			errs = append(errs, fmt.Errorf("decisions: %w", err))
		}
		if detOK {
			errs = append(errs, h.resolveOrphans(ctx, eh, h.det.Open()))
		}
	}
	if h.gauges != nil {
		h.gauges.Forget(owns)
	}
	err := errors.Join(errs...)
	h.logger().Info("tenants handed over", "component", "daemon", "count", dh.Adopted, "dropped", dh.Dropped,
		"episodes", len(dh.Open), "decisions_adopted", eh.Adopted, "decisions_released", eh.Released,
		"duration", now().Sub(start), "err", err)
	return err
}

// resolveOrphans resolves each adopted decision that names no episode
// the detector holds open (its episode ended while no owner ran).
func (h *handover) resolveOrphans(ctx context.Context, eh decide.Handed, fps map[string]bool) error {
	var errs []error
	for _, d := range eh.Decisions {
		if fps[d.AnomalyID] {
			continue
		}
		a := anomaly.Alert{Fingerprint: d.AnomalyID, TenantID: d.TenantID, Status: anomaly.StatusResolved,
			EndsAt: time.Now().UTC(), Summary: "episode no longer open at handover"}
		if err := h.eng.Handle(ctx, a); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (h *handover) logger() *slog.Logger {
	if h.log == nil {
		return slog.Default()
	}
	return h.log
}

// own keeps the view to the owned tenants and adds the open episodes of
// newly owned ones.
func (g *guardView) own(ctx context.Context, owns func(string) bool, open []anomaly.Alert) {
	g.mu.Lock()
	var gone []string
	for tenant := range g.firing {
		if !owns(tenant) {
			delete(g.firing, tenant)
			gone = append(gone, tenant)
		}
	}
	g.mu.Unlock()
	if g.gauges != nil {
		for _, tenant := range gone {
			g.gauges.SetActiveAnomalies(tenant, 0)
		}
	}
	for _, a := range open {
		g.Send(ctx, a)
	}
}
