package store

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Migration is one versioned step of the schema. Statements use {db} for
// the database and must be idempotent (IF NOT EXISTS), so a migration that
// died half-way can run again. ClickHouse 18.16 has no ADD COLUMN IF NOT
// EXISTS, so a statement "ALTER TABLE {db}.<table> ADD COLUMN <name> ..."
// (one column each) is skipped when the table already has the column.
type Migration struct {
	Version    uint32
	Name       string
	Statements []string
}

// minServerMajor is the oldest ClickHouse the schema is tested on (18.16).
const minServerMajor = 18

// Migrations is the schema, oldest first. Append; never edit a released step.
var Migrations = []Migration{
	{1, "events", []string{`
CREATE TABLE IF NOT EXISTS {db}.events (
    tenant_id     String,
    kind          String,
    time          DateTime,
    time_ms       UInt16,
    id            String,
    quantity      Float64,
    service       String,
    route         String,
    user_id       String,
    latency_ms    Float64,
    status_code   UInt16,
    error         UInt8,
    attrs_keys    Array(String),
    attrs_values  Array(String),
    plan          String,
    unit_price    Decimal(18, 9),
    cost          Decimal(18, 9),
    price_version String,
    ingested_at   DateTime
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (tenant_id, kind, time)`}},
	{2, "usage_1m", []string{`
CREATE TABLE IF NOT EXISTS {db}.usage_1m (
    tenant_id     String,
    kind          String,
    minute        DateTime,
    count         UInt64,
    quantity      Float64,
    cost          Decimal(38, 9),
    errors        UInt64,
    latency_count UInt64,
    latency       AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), Float32)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant_id, kind, minute)`, `
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_1m_mv TO {db}.usage_1m AS
SELECT
    tenant_id,
    kind,
    toStartOfMinute(time) AS minute,
    count() AS count,
    sum(quantity) AS quantity,
    toDecimal128(sum(cost), 9) AS cost,
    toUInt64(sum(error)) AS errors,
    toUInt64(countIf(latency_ms > 0)) AS latency_count,
    quantilesTDigestState(0.5, 0.95, 0.99)(toFloat32(if(latency_ms > 0, latency_ms, nan))) AS latency
FROM {db}.events
GROUP BY tenant_id, kind, minute`}},
	{3, "anomalies", []string{`
CREATE TABLE IF NOT EXISTS {db}.anomalies (
    fingerprint String,
    tenant_id   String,
    metric      String,
    kind        String,
    integration String,
    status      String,
    severity    String,
    observed    Float64,
    baseline    Float64,
    ratio       Float64,
    starts_at   DateTime,
    ends_at     DateTime,
    summary     String,
    updated_at  DateTime
) ENGINE = ReplacingMergeTree(updated_at)
PARTITION BY toYYYYMM(starts_at)
ORDER BY (tenant_id, fingerprint, starts_at)`}},
	{4, "decisions", []string{`
CREATE TABLE IF NOT EXISTS {db}.decisions (
    tenant_id    String,
    scope        String,
    action       String,
    rate_per_sec Float64,
    burst        UInt32,
    issued_at    DateTime,
    expires_at   DateTime,
    reason       String,
    source       String,
    anomaly_id   String,
    recorded_at  DateTime
) ENGINE = MergeTree
PARTITION BY toYYYYMM(issued_at)
ORDER BY (tenant_id, issued_at)`}},
	{5, "pg_findings", []string{`
CREATE TABLE IF NOT EXISTS {db}.pg_findings (
    database           String,
    queryid            Int64,
    userid             UInt32,
    role               String,
    query              String,
    tables             Array(String),
    class              String,
    calls              UInt64,
    total_exec_time_ms Float64,
    first_seen         DateTime,
    last_seen          DateTime,
    observed_at        DateTime
) ENGINE = ReplacingMergeTree(observed_at)
PARTITION BY toYYYYMM(first_seen)
ORDER BY (database, queryid, userid)`}},
	// Every revision of the decisions bucket the daemon sees: its KV key,
	// revision and operation, whether its signature verified (and why
	// not), the signing key, and the stored value when it did not verify.
	{6, "decisions_integrity", []string{
		`ALTER TABLE {db}.decisions ADD COLUMN kv_key String`,
		`ALTER TABLE {db}.decisions ADD COLUMN kv_revision UInt64`,
		`ALTER TABLE {db}.decisions ADD COLUMN kv_op String`,
		`ALTER TABLE {db}.decisions ADD COLUMN verified UInt8`,
		`ALTER TABLE {db}.decisions ADD COLUMN key_id String`,
		`ALTER TABLE {db}.decisions ADD COLUMN reject_reason String`,
		`ALTER TABLE {db}.decisions ADD COLUMN raw String`,
	}},
	// Corrections void or amend stored events. Each row holds the deltas it
	// makes at the original's time; the second view adds them to usage_1m
	// (count and errors are UInt64 there, so a -1 is written as 2^64-1:
	// every sum(count) wraps back to the exact total). One partition, so a
	// batch of corrections is stored by one atomic insert.
	{7, "corrections", []string{`
CREATE TABLE IF NOT EXISTS {db}.corrections (
    tenant_id      String,
    kind           String,
    time           DateTime,
    time_ms        UInt16,
    event_id       String,
    correction_id  String,
    seq            UInt32,
    action         String,
    quantity       Float64,
    delta_count    Int64,
    delta_quantity Float64,
    delta_cost     Decimal(18, 9),
    delta_errors   Int64,
    unit_price     Decimal(18, 9),
    price_version  String,
    plan           String,
    reason         String,
    corrected_by   String,
    forced         UInt8,
    corrected_at   DateTime
) ENGINE = MergeTree
ORDER BY (tenant_id, kind, time, event_id)`, `
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_1m_corrections_mv TO {db}.usage_1m AS
SELECT
    tenant_id,
    kind,
    toStartOfMinute(time) AS minute,
    toUInt64(sum(delta_count)) AS count,
    sum(delta_quantity) AS quantity,
    toDecimal128(sum(delta_cost), 9) AS cost,
    toUInt64(sum(delta_errors)) AS errors,
    toUInt64(0) AS latency_count,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(toFloat32(0), 0) AS latency
FROM {db}.corrections
GROUP BY tenant_id, kind, minute`}},
	// billing_exports records what each billing export of a closed period
	// covered: one "export" row per export, then its usage and tenant_total
	// lines. A later export of the same period adjusts against it. One
	// export is one insert into one partition, so it is recorded whole.
	{8, "billing_exports", []string{`
CREATE TABLE IF NOT EXISTS {db}.billing_exports (
    export_id      String,
    period_from    String,
    period_to      String,
    scope          String,
    generated_at   DateTime,
    line_type      String,
    tenant_id      String,
    kind           String,
    unit_price     Decimal(18, 9),
    price_version  String,
    events         Int64,
    quantity       Float64,
    amount         Decimal(38, 9),
    amount_rounded Decimal(38, 9),
    currency       String
) ENGINE = MergeTree
PARTITION BY toYYYYMM(generated_at)
ORDER BY (period_from, period_to, generated_at, export_id, tenant_id, kind, unit_price)`}},
	// A decision's mode: "enforce" or "shadow" ("" for a delete or purge,
	// and for rows written before the column).
	{9, "decisions_mode", []string{
		`ALTER TABLE {db}.decisions ADD COLUMN mode String`,
	}},
	// usage_1h is each tenant's event count per hour over all kinds, the
	// seasonal profile the anomaly warm start reads: a sixtieth of the
	// rows of usage_1m. Its views mirror usage_1m's (corrections add their
	// count deltas, -1 as 2^64-1). The backfill sums the hours usage_1m
	// already holds and runs before the views exist, and only into an
	// empty table, so a migration that died after it and runs again adds
	// nothing twice. Events stored between the backfill and the views'
	// creation (a server round trip, when a daemon ingests while another
	// migrates) are in usage_1m but not in usage_1h.
	{10, "usage_1h", []string{`
CREATE TABLE IF NOT EXISTS {db}.usage_1h (
    tenant_id String,
    hour      DateTime,
    count     UInt64
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, hour)`, `
INSERT INTO {db}.usage_1h (tenant_id, hour, count)
SELECT tenant_id, toStartOfHour(minute) AS hour, sum(count) AS count
FROM {db}.usage_1m
WHERE (SELECT count() FROM {db}.usage_1h) = 0
GROUP BY tenant_id, hour`, `
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_1h_mv TO {db}.usage_1h AS
SELECT
    tenant_id,
    toStartOfHour(time) AS hour,
    count() AS count
FROM {db}.events
GROUP BY tenant_id, hour`, `
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.usage_1h_corrections_mv TO {db}.usage_1h AS
SELECT
    tenant_id,
    toStartOfHour(time) AS hour,
    toUInt64(sum(delta_count)) AS count
FROM {db}.corrections
GROUP BY tenant_id, hour`}},
}

// addColumnRE matches the statements Migrate skips when the column exists.
var addColumnRE = regexp.MustCompile(`^ALTER TABLE \{db\}\.([a-z_0-9]+) ADD COLUMN ([a-z_0-9]+) `)

// MigrationStatus is one applied or pending step.
type MigrationStatus struct {
	Version   uint32
	Name      string
	AppliedAt time.Time // zero when pending
}

// Migrate creates the database and applies every pending migration in order.
// It is idempotent and refuses servers older than 18.16's major version.
// In a cluster it migrates each shard in turn, each with a ledger of its
// own, and returns the steps with the latest time each was applied.
func (s *Store) Migrate(ctx context.Context) ([]MigrationStatus, error) {
	if s.cfg.Cluster == "" {
		return s.migrateNode(ctx, s.nodes()[0])
	}
	if err := s.checkCluster(ctx); err != nil {
		return nil, err
	}
	var out []MigrationStatus
	for _, sh := range s.shards {
		got, err := s.migrateNode(ctx, sh)
		if err != nil {
			return nil, fmt.Errorf("shard %s: %w", sh.addr, err)
		}
		if err := s.checkLayers(ctx, sh); err != nil {
			return nil, fmt.Errorf("shard %s: %w", sh.addr, err)
		}
		if out == nil {
			out = got
			continue
		}
		for i := range out {
			if got[i].AppliedAt.After(out[i].AppliedAt) {
				out[i].AppliedAt = got[i].AppliedAt
			}
		}
	}
	return out, nil
}

// migrateNode applies the pending migrations of one server's ledger.
func (s *Store) migrateNode(ctx context.Context, node shard) ([]MigrationStatus, error) {
	conn := node.conn
	major, minor, err := serverVersion(ctx, conn)
	if err != nil {
		return nil, err
	}
	if major < minServerMajor {
		return nil, fmt.Errorf("clickhouse %d.%d is older than the supported 18.16", major, minor)
	}
	db := s.cfg.Database
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db); err != nil {
		return nil, fmt.Errorf("create database %s: %w", db, err)
	}
	ledger := `CREATE TABLE IF NOT EXISTS ` + db + `.schema_migrations (
    version    UInt32,
    name       String,
    applied_at DateTime
) ENGINE = MergeTree ORDER BY version`
	if err := conn.Exec(ctx, ledger); err != nil {
		return nil, fmt.Errorf("create schema_migrations: %w", err)
	}
	applied, err := s.applied(ctx, conn)
	if err != nil {
		return nil, err
	}
	var out []MigrationStatus
	for _, m := range Migrations {
		if at, ok := applied[m.Version]; ok {
			out = append(out, MigrationStatus{m.Version, m.Name, at})
			continue
		}
		steps, err := s.steps(m)
		if err != nil {
			return out, fmt.Errorf("migration %d %s: %w", m.Version, m.Name, err)
		}
		for _, st := range steps {
			if st.column != "" {
				has, err := s.hasColumn(ctx, conn, st.table, st.column)
				if err != nil {
					return out, fmt.Errorf("migration %d %s: %w", m.Version, m.Name, err)
				}
				if has {
					continue
				}
			}
			if err := conn.Exec(ctx, st.sql); err != nil {
				return out, fmt.Errorf("migration %d %s: %w", m.Version, m.Name, err)
			}
		}
		now := time.Now().UTC().Truncate(time.Second)
		if err := s.recordMigration(ctx, conn, m, now); err != nil {
			return out, err
		}
		out = append(out, MigrationStatus{m.Version, m.Name, now})
	}
	return out, nil
}

// hasColumn reports whether table in the store's database has column.
func (s *Store) hasColumn(ctx context.Context, conn driver.Conn, table, column string) (bool, error) {
	var n uint64
	err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?",
		s.cfg.Database, table, column).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("read system.columns: %w", err)
	}
	return n > 0, nil
}

func (s *Store) applied(ctx context.Context, conn driver.Conn) (map[uint32]time.Time, error) {
	rows, err := conn.Query(ctx, "SELECT version, max(applied_at) FROM "+s.Table("schema_migrations")+" GROUP BY version")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	out := make(map[uint32]time.Time)
	for rows.Next() {
		var v uint32
		var at time.Time
		if err := rows.Scan(&v, &at); err != nil {
			return nil, fmt.Errorf("read schema_migrations: %w", err)
		}
		out[v] = at
	}
	return out, rows.Err()
}

// MigrationColumns is the column list of the schema_migrations ledger.
const MigrationColumns = "version, name, applied_at"

func (s *Store) recordMigration(ctx context.Context, conn driver.Conn, m Migration, at time.Time) error {
	err := insertInto(ctx, conn, s.Table("schema_migrations"), "schema_migrations", MigrationColumns, []Migration{m}, func(m *Migration) []any {
		return []any{m.Version, m.Name, at}
	})
	if err != nil {
		return fmt.Errorf("record migration %d: %w", m.Version, err)
	}
	return nil
}

// InsertColumns returns the column list each table's writer names, by
// table: every table of the schema except usage_1m and usage_1h, which
// only their materialized views (and usage_1h's backfill) write.
func InsertColumns() map[string]string {
	return map[string]string{
		"schema_migrations": MigrationColumns,
		"events":            EventColumns,
		"corrections":       CorrectionColumns,
		"anomalies":         AnomalyColumns,
		"decisions":         DecisionColumns,
		"pg_findings":       FindingColumns,
		"billing_exports":   BillingExportColumns,
	}
}
