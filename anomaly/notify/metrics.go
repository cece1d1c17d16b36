package notify

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the notifier series, labelled by sink name.
type metrics struct {
	sent     *prometheus.CounterVec
	failed   *prometheus.CounterVec
	dropped  *prometheus.CounterVec
	retries  *prometheus.CounterVec
	queueLen *prometheus.GaugeVec
	invalid  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_notifier_sent_total",
			Help: "Alert deliveries a sink completed (for Alertmanager, one per alert and Alertmanager URL).",
		}, []string{"sink"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_notifier_failures_total",
			Help: "Alert deliveries that failed after all retries.",
		}, []string{"sink"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_notifier_dropped_total",
			Help: "Alerts dropped because a sink queue was full or the notifier was closed.",
		}, []string{"sink"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_notifier_retries_total",
			Help: "Delivery attempts retried after a failure.",
		}, []string{"sink"}),
		queueLen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tenantguard_notifier_queue_length",
			Help: "Alerts waiting in a sink queue.",
		}, []string{"sink"}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenantguard_notifier_invalid_total",
			Help: "Alerts refused by Send because they lack a tenant, metric, fingerprint or start time.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.sent, m.failed, m.dropped, m.retries, m.queueLen, m.invalid} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("register notifier metrics: %w (one notifier per registry)", err)
			}
			return nil, fmt.Errorf("register notifier metrics: %w", err)
		}
	}
	return m, nil
}

// sinkStats are one sink's children of the vectors, resolved once.
type sinkStats struct {
	sent, failed, dropped, retries prometheus.Counter
	queueLen                       prometheus.Gauge
}

func (m *metrics) forSink(name string) *sinkStats {
	return &sinkStats{
		sent:     m.sent.WithLabelValues(name),
		failed:   m.failed.WithLabelValues(name),
		dropped:  m.dropped.WithLabelValues(name),
		retries:  m.retries.WithLabelValues(name),
		queueLen: m.queueLen.WithLabelValues(name),
	}
}
