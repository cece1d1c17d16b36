package pgstat

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/collector/store"
)

// FindingWriter stores findings (ClickHouseWriter in production).
type FindingWriter interface {
	WriteFindings(ctx context.Context, fs []Finding) error
}

// Alerter is told about each unscoped statement the stage has not seen
// before; the daemon wires it to NATS and the alert sinks.
type Alerter interface {
	NewUnscoped(ctx context.Context, f Finding) error
}

// BatchConn is the part of a clickhouse-go connection the writer needs.
type BatchConn interface {
	PrepareBatch(ctx context.Context, query string, opts ...driver.PrepareBatchOption) (driver.Batch, error)
}

var _ BatchConn = (driver.Conn)(nil)

// ClickHouseWriter inserts findings into <database>.pg_findings.
type ClickHouseWriter struct {
	conn  BatchConn
	query string
}

var _ FindingWriter = (*ClickHouseWriter)(nil)

// NewClickHouseWriter writes into database.pg_findings (made by store.Migrate).
func NewClickHouseWriter(conn BatchConn, database string) (*ClickHouseWriter, error) {
	if !store.ValidIdent(database) {
		return nil, fmt.Errorf("clickhouse database %q: must be a plain identifier (letters, digits, _)", database)
	}
	return &ClickHouseWriter{conn: conn, query: "INSERT INTO " + database +
		".pg_findings (database, queryid, userid, role, query, tables, class, calls, total_exec_time_ms, first_seen, last_seen, observed_at)"}, nil
}

// WriteFindings inserts one row per finding in one batch.
func (w *ClickHouseWriter) WriteFindings(ctx context.Context, fs []Finding) error {
	if len(fs) == 0 {
		return nil
	}
	batch, err := w.conn.PrepareBatch(ctx, w.query)
	if err != nil {
		return fmt.Errorf("prepare pg_findings batch: %w", err)
	}
	for _, f := range fs {
		tables := f.Tables
		if tables == nil {
			tables = []string{}
		}
		if err := batch.Append(f.Database, f.QueryID, f.UserID, f.Role, f.Query, tables, string(f.Class),
			f.Calls, f.TotalExecTimeMs, f.FirstSeen, f.LastSeen, f.ObservedAt); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("append pg_findings row: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert pg_findings: %w", err)
	}
	return nil
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
