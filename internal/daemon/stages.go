package daemon

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/anomaly/advisor"
	"github.com/tenantguard/tenantguard/anomaly/decide"
	"github.com/tenantguard/tenantguard/anomaly/notify"
	"github.com/tenantguard/tenantguard/collector"
	"github.com/tenantguard/tenantguard/collector/pgstat"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/exporter/metrics"
	"github.com/tenantguard/tenantguard/limiter"
)

// alertFanout is the alert sinks (Alertmanager, webhook, NATS, ClickHouse).
type alertFanout = *notify.Fanout

// startStages applies the schema and builds the stages switched on, waiting
// for ClickHouse and NATS as long as ctx lasts. Each stage's Run is added
// to d.services, its Close to the cleanup stack.
func (d *Daemon) startStages(ctx context.Context, ready *readiness) error {
	cfg, log := d.cfg, d.log
	if cfg.ClickHouse.Migrate {
		ready.waitingFor("the ClickHouse schema migration")
		if err := retryUntil(ctx, log, "store", "clickhouse migrate", time.Minute, func(ctx context.Context) error {
			_, err := d.store.Migrate(ctx)
			return err
		}); err != nil {
			return err
		}
	}
	// Every stage that needs NATS at start (the decisions buckets, the
	// collector's streams) waits for JetStream here rather than give up.
	ready.waitingFor("NATS JetStream")
	if err := retryUntil(ctx, log, "daemon", "nats jetstream", 5*time.Second, func(ctx context.Context) error {
		_, err := d.js.AccountInfo(ctx)
		return err
	}); err != nil {
		return err
	}
	ready.waitingFor("the NATS streams and buckets")
	if err := retryUntil(ctx, log, "daemon", "nats streams and buckets", provisionAttempt, func(ctx context.Context) error {
		kept, err := ProvisionNATS(ctx, d.js, cfg)
		if err == nil {
			for _, k := range kept {
				log.Warn(k.String(), "component", "daemon")
			}
		}
		return err
	}); err != nil {
		return err
	}
	ready.waitingFor("the stages to start")
	if cfg.ClickHouse.RetentionDays > 0 {
		d.services = append(d.services, d.retention)
	}
	var observers []collector.Observer
	// Tenant state follows the collector's partitions: each stage built
	// below joins the handover.
	ho := &handover{log: log, view: &d.guard}
	if cfg.Exporter.Enabled {
		m, err := metrics.New(cfg.Exporter.Config, d.reg)
		if err != nil {
			return err
		}
		d.onClose(m.Close)
		d.metrics = m
		d.guard.gauges = m
		ho.gauges = m
		observers = append(observers, m)
		book := d.book
		m.SetSpendCapSource(func(tenant string) (float64, bool) {
			limit, ok := book.SpendCap(book.Plan(tenant))
			return limit.InexactFloat64(), ok
		})
	}
	if cfg.Decisions.Enabled {
		if err := d.startDecisions(ctx); err != nil {
			return err
		}
		ho.eng = d.engine
	}
	if cfg.Anomaly.Enabled {
		det, err := d.startAnomaly(ctx)
		if err != nil {
			return err
		}
		observers = append(observers, det)
		ho.det = det
		if cfg.Anomaly.WarmStart.Enabled {
			ho.src = d.store
		}
	}
	if cfg.Advisor.Enabled {
		if err := d.startAdvisor(); err != nil {
			return err
		}
	}
	if cfg.PGStat.Enabled {
		if err := d.startPGStat(); err != nil {
			return err
		}
	}
	if cfg.Collector.Enabled {
		col, err := collector.New(cfg.Collector.Config, collector.Deps{
			JetStream: d.js, Store: d.store, Pricer: d.book, Observers: observers,
			Registry: d.reg, Logger: log, Handover: ho,
		})
		if err != nil {
			return err
		}
		d.onClose(col.Close)
		d.services = append(d.services, col.Run)
		ready.collector.Store(col)
		if err := d.startCorrections(observers, col.Owns); err != nil {
			return err
		}
	}
	return nil
}

// alertSink returns the daemon's alert fan-out, built on first use and run
// as a service.
func (d *Daemon) alertSink() (*notify.Fanout, error) {
	if d.fanout != nil {
		return d.fanout, nil
	}
	fan, err := notify.New(d.cfg.Alerts, notify.Deps{
		Logger: d.log, Registerer: d.reg, NATS: d.nc,
		ClickHouse: d.store,
	})
	if err != nil {
		return nil, fmt.Errorf("alerts: %w", err)
	}
	d.fanout = fan
	d.services = append(d.services, fan.Run)
	d.onClose(fan.Close)
	return fan, nil
}

// AnomalyConfig is cfg.Anomaly completed from the price book (the plans'
// spend caps, unless anomaly.spend_caps sets its own), and the detector
// option that gives it each tenant's plan. `run` and `replay` judge with
// them alike.
func AnomalyConfig(cfg Config) (anomaly.Config, anomaly.Option, error) {
	ac := cfg.Anomaly.Config
	book, err := pricing.New(cfg.Pricing, nil)
	if err != nil {
		return ac, nil, err
	}
	if len(ac.SpendCaps) == 0 {
		ac.SpendCaps = book.Caps()
	}
	return ac, anomaly.WithTenantPlan(book.Plan), ac.Validate()
}

// startAnomaly builds the detector, warm-starts its baselines from
// ClickHouse, and runs it as a service. Its alerts go to the sinks, the
// live view and, when decisions are on, the decision engine.
func (d *Daemon) startAnomaly(ctx context.Context) (*anomaly.Detector, error) {
	acfg, planOf, err := AnomalyConfig(d.cfg)
	if err != nil {
		return nil, err
	}
	fan, err := d.alertSink()
	if err != nil {
		return nil, err
	}
	all := anomaly.Sinks{fan, &d.guard}
	if d.engine != nil {
		all = append(all, d.engine)
	}
	det, err := anomaly.New(acfg, all, anomaly.WithLogger(d.log), planOf)
	if err != nil {
		return nil, err
	}
	switch {
	case !acfg.WarmStart.Enabled:
		d.log.Info("anomaly warm start off; baselines start cold", "component", "anomaly")
	case d.cfg.Collector.Enabled:
		// The collector hands each partition's tenants over before it
		// consumes them: that warm-starts the tenants this replica owns.
		d.log.Info("anomaly baselines warm-start as partitions are claimed", "component", "anomaly")
	default:
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		n, err := det.WarmStart(wctx, d.store, time.Now())
		cancel()
		if err != nil {
			// A cold start is worse than a warm one, not fatal: baselines learn.
			d.log.Warn("anomaly warm start failed; starting cold", "component", "anomaly", "err", err)
		} else {
			d.log.Info("anomaly baselines warm-started", "component", "anomaly", "count", n)
		}
	}
	d.services = append(d.services, det.Run)
	d.onClose(det.Close)
	return det, nil
}

// startAdvisor runs the heavy-tenant advisor: it judges the last
// advisor.window every advisor.interval and raises and resolves
// heavy_tenant alerts on the sinks, resuming the episodes still firing.
func (d *Daemon) startAdvisor() error {
	fan, err := d.alertSink()
	if err != nil {
		return err
	}
	adv, err := advisor.New(d.cfg.Advisor.Config, advisor.Deps{Source: d.store, Sink: fan, Episodes: d.store, Logger: d.log})
	if err != nil {
		return err
	}
	d.services = append(d.services, adv.Run)
	d.onClose(adv.Close)
	return nil
}

// pgAlerter turns a new unscoped Postgres statement into an alert on every
// sink. A finding belongs to a database, not a tenant: the alert carries
// the database and no tenant, and the queryid and role are labels.
type pgAlerter struct{ sink anomaly.Sink }

func (p pgAlerter) NewUnscoped(ctx context.Context, f pgstat.Finding) error {
	now := time.Now().UTC()
	p.sink.Send(ctx, anomaly.Alert{
		Fingerprint: anomaly.Fingerprint("", anomaly.MetricPGUnscoped, f.Database, strconv.FormatInt(f.QueryID, 10), time.Time{}),
		Database:    f.Database,
		Metric:      anomaly.MetricPGUnscoped,
		Status:      anomaly.StatusFiring,
		Severity:    anomaly.SeverityCritical,
		StartsAt:    now,
		Summary:     fmt.Sprintf("database %s: role %s ran a statement on %s with no tenant filter: %.200s", f.Database, f.Role, strings.Join(f.Tables, ", "), f.Query),
		Labels:      map[string]string{"queryid": strconv.FormatInt(f.QueryID, 10), "role": f.Role},
	})
	return nil
}

// startPGStat runs the Postgres auditor, writing findings to ClickHouse.
func (d *Daemon) startPGStat() error {
	fan, err := d.alertSink()
	if err != nil {
		return err
	}
	stage, err := pgstat.New(d.cfg.PGStat.Config, pgstat.WithWriter(d.store), pgstat.WithAlerter(pgAlerter{fan}),
		pgstat.WithRegisterer(d.reg), pgstat.WithLogger(d.log))
	if err != nil {
		return err
	}
	d.services = append(d.services, stage.Run)
	d.onClose(stage.Close)
	return nil
}

// startDecisions runs the decision engine, which turns alerts into
// throttle and circuit decisions in the KV bucket, and the trail, which
// records every revision of the bucket, whoever wrote it, in the ClickHouse
// decisions table and tells the live view and the gauges.
func (d *Daemon) startDecisions(ctx context.Context) error {
	pub, err := NewDecisionsPublisher(ctx, d.nc, d.cfg.Decisions.Config, d.signer)
	if err != nil {
		return fmt.Errorf("decisions: %w", err)
	}
	d.decisions = pub
	eng, err := decide.New(d.cfg.Decisions.Config, decide.Deps{Publisher: pub, Registerer: d.reg, Logger: d.log})
	if err != nil {
		return err
	}
	d.engine = eng
	d.services = append(d.services, eng.Run)
	d.onClose(eng.Close)

	tr, err := decide.NewTrail(d.cfg.Decisions.Config, decide.TrailDeps{Conn: d.nc, Recorder: decide.NewClickHouseRecorder(d.store),
		Verifier: pub.Verifier(), Registerer: d.reg, Logger: d.log, Observer: &d.guard})
	if err != nil {
		return err
	}
	// Decisions live before the trail's resume point are shown from the
	// bucket once; from then on the trail tells every change.
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	live, err := pub.List(lctx, false)
	cancel()
	if err != nil {
		d.log.Warn("list live decisions", "component", "decisions", "err", err)
	}
	for _, dec := range live {
		if key, err := limiter.Key(dec.TenantID, dec.Scope); err == nil {
			d.guard.setDecision(key, dec, true)
		}
	}
	d.services = append(d.services, tr.Run)
	d.onClose(tr.Close)
	return nil
}
