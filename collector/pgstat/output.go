package pgstat

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/collector/store"
)

// FindingWriter stores rows of pg_findings; *store.Store is one.
type FindingWriter interface {
	InsertFindings(ctx context.Context, rows []store.FindingRow) error
}

var _ FindingWriter = (*store.Store)(nil)

// Alerter is told about each unscoped statement the stage has not seen
// before; the daemon wires it to NATS and the alert sinks.
type Alerter interface {
	NewUnscoped(ctx context.Context, f Finding) error
}

// findingRows gives each finding its pg_findings row.
func findingRows(fs []Finding) []store.FindingRow {
	rows := make([]store.FindingRow, len(fs))
	for i, f := range fs {
		rows[i] = store.FindingRow{Database: f.Database, QueryID: f.QueryID, UserID: f.UserID, Role: f.Role,
			Query: f.Query, Tables: f.Tables, Class: string(f.Class), Calls: f.Calls, TotalExecTimeMs: f.TotalExecTimeMs,
			FirstSeen: f.FirstSeen, LastSeen: f.LastSeen, ObservedAt: f.ObservedAt}
	}
	return rows
}

// metrics of the stage.
type metrics struct {
	findings   *prometheus.GaugeVec
	pullErrors *prometheus.CounterVec
	parsed     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		findings: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tenantguard_pg_findings",
			Help: "Statements in pg_stat_statements not restricted to one tenant, by class and database.",
		}, []string{"class", "database"}),
		pullErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_pg_pull_errors_total",
			Help: "Failed pulls of pg_stat_statements, by database (or dsn index before connecting).",
		}, []string{"database"}),
		parsed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tenantguard_pg_statements_parsed_total",
			Help: "Statement texts parsed by the tenant-scope analyzer (cache misses).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.findings, m.pullErrors, m.parsed} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register pgstat metrics: %w", err)
		}
	}
	return m, nil
}
