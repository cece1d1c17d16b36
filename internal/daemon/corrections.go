package daemon

import (
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/collector"
	"github.com/tenantguard/tenantguard/collector/correct"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/exporter/metrics"
)

// The stages whose live state corrections change; startCorrections finds
// them among the collector's observers.
var (
	_ correct.Observer = (*metrics.Metrics)(nil)
	_ correct.Observer = (*anomaly.Detector)(nil)
)

// startCorrections adds the correction service beside the collector: it
// applies requests from TENANTGUARD_CORRECTIONS, one at a time across every
// replica, and tells the observers that implement correct.Observer (the
// exporter's metrics, the detector's spend) when this replica owns the
// tenant; otherwise it passes the effect to the owner over NATS
// (OwnerCorrectionsSubject), since any replica may apply a request.
func (d *Daemon) startCorrections(observers []collector.Observer, owns func(tenantID string) bool) error {
	applier, err := correct.NewApplier(correct.Config{Lateness: d.cfg.Collector.Lateness}, d.store)
	if err != nil {
		return err
	}
	scfg := correct.DefaultServiceConfig()
	scfg.Replicas = d.cfg.Collector.Stream.Replicas
	var obs []correct.Observer
	for _, o := range observers {
		if co, ok := o.(correct.Observer); ok {
			obs = append(obs, co)
		}
	}
	route := &correctionRouter{local: obs, owns: owns, nc: d.nc, log: d.log}
	sub, err := d.nc.Subscribe(OwnerCorrectionsSubject+".*", route.fromPeer)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", OwnerCorrectionsSubject, err)
	}
	d.onClose(sub.Unsubscribe)
	svc, err := correct.NewService(scfg, correct.ServiceDeps{JetStream: d.js, Applier: applier, Observers: []correct.Observer{route},
		Registry: d.reg, Logger: d.log})
	if err != nil {
		return err
	}
	d.onClose(svc.Close)
	d.services = append(d.services, svc.Run)
	return nil
}

// OwnerCorrectionsSubject.<tenant_id> carries an applied correction's
// effect from the replica that applied it to the tenant's owner (core NATS;
// only the daemon's user may publish here, see docs/security.md). A lost
// message is made good at the owner's next warm start, which reads the
// corrections from ClickHouse's rollups.
const OwnerCorrectionsSubject = "tenantguard.owners.corrections"

// correctionRouter gives an applied correction's effect to the live state
// of the tenant's owner: this replica's observers when it owns the tenant,
// else the owner's, over NATS. A replica never holds state for a tenant it
// does not own.
type correctionRouter struct {
	local []correct.Observer
	owns  func(tenantID string) bool
	nc    *nats.Conn
	log   *slog.Logger
}

func (r *correctionRouter) ObserveCorrection(e *event.CorrectionEffect) {
	if r.owns(e.TenantID) {
		r.observe(e)
		return
	}
	data, err := json.Marshal(e)
	if err == nil {
		err = r.nc.Publish(OwnerCorrectionsSubject+"."+e.TenantID, data)
	}
	if err != nil {
		r.log.Warn("pass a correction to its owner; it takes effect at the owner's next warm start",
			"component", "daemon", "tenant", e.TenantID, "err", err)
	}
}

// fromPeer takes an effect another replica applied, if this replica owns
// the tenant.
func (r *correctionRouter) fromPeer(msg *nats.Msg) {
	var e event.CorrectionEffect
	if len(msg.Data) > 4096 || json.Unmarshal(msg.Data, &e) != nil || !event.ValidTenantID(e.TenantID) ||
		msg.Subject != OwnerCorrectionsSubject+"."+e.TenantID {
		r.log.Warn("ignored a malformed correction effect", "component", "daemon", "subject", msg.Subject)
		return
	}
	if r.owns(e.TenantID) {
		r.observe(&e)
	}
}

func (r *correctionRouter) observe(e *event.CorrectionEffect) {
	for _, o := range r.local {
		o.ObserveCorrection(e)
	}
}
