package collector

import "github.com/prometheus/client_golang/prometheus"

// metrics are the collector's self-metrics, prefix tenantguard_collector_.
type metrics struct {
	events       *prometheus.CounterVec // result: stored, duplicate, dlq
	dlq          *prometheus.CounterVec // reason
	duplicates   *prometheus.CounterVec // reason: redelivery, republish
	batchRows    prometheus.Histogram
	insertDur    prometheus.Histogram
	insertErrors prometheus.Counter
	redelivered  prometheus.Counter
	lag          prometheus.Gauge
	pending      prometheus.Gauge
	healthy      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_collector_events_total",
			Help: "Messages the collector finished, by result: stored, duplicate (already in ClickHouse) or dlq.",
		}, []string{"result"}),
		dlq: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_collector_dlq_total",
			Help: "Invalid events sent to the dead-letter stream, by reason.",
		}, []string{"reason"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_collector_duplicates_total",
			Help: "Events not stored because their id was already stored, by reason: redelivery (JetStream delivered it again) or republish (a publisher sent it again).",
		}, []string{"reason"}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tenantguard_collector_batch_rows",
			Help:    "Rows per ClickHouse insert.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}),
		insertDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tenantguard_collector_insert_duration_seconds",
			Help:    "Duration of successful ClickHouse batch inserts.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		insertErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenantguard_collector_insert_errors_total",
			Help: "Failed attempts the collector retries with backoff: ClickHouse inserts and checks, dead-lettering, stream creation.",
		}),
		redelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenantguard_collector_redeliveries_total",
			Help: "Messages JetStream delivered more than once.",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tenantguard_collector_lag_seconds",
			Help: "Now minus the event time of the newest stored event, at its insert.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tenantguard_collector_pending_messages",
			Help: "Messages in the stream not yet delivered to the collector's consumer, plus those awaiting ack.",
		}),
		healthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tenantguard_collector_up",
			Help: "1 when the last ClickHouse insert succeeded, 0 while inserts fail.",
		}),
	}
	for _, c := range []prometheus.Collector{m.events, m.dlq, m.duplicates, m.batchRows, m.insertDur, m.insertErrors, m.redelivered, m.lag, m.pending, m.healthy} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	for _, r := range []string{"stored", "duplicate", "dlq"} {
		m.events.WithLabelValues(r)
	}
	for _, r := range []string{"redelivery", "republish"} {
		m.duplicates.WithLabelValues(r)
	}
	m.healthy.Set(1)
	return m, nil
}
