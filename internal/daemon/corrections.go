package daemon

import (
	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/collector"
	"github.com/tenantguard/tenantguard/collector/correct"
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
// exporter's metrics, the detector's spend).
func (d *Daemon) startCorrections(observers []collector.Observer) error {
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
	svc, err := correct.NewService(scfg, correct.ServiceDeps{JetStream: d.js, Applier: applier, Observers: obs,
		Registry: d.reg, Logger: d.log})
	if err != nil {
		return err
	}
	d.onClose(svc.Close)
	d.services = append(d.services, svc.Run)
	return nil
}
