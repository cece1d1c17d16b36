package notify

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/collector/store"
)

// anomaliesColumns is the explicit column list every insert names
// (ClickHouse 18.16 needs it).
const anomaliesColumns = "fingerprint, tenant_id, metric, kind, integration, status, severity, observed, baseline, ratio, starts_at, ends_at, summary, updated_at"

// ClickHouse writes alerts to the anomalies table, one batch insert per
// Notify call. The table is a ReplacingMergeTree(updated_at), so the last
// row of an episode (its resolution) wins.
type ClickHouse struct {
	conn   driver.Conn
	insert string
	retry  retrier
	now    func() time.Time
}

var _ Notifier = (*ClickHouse)(nil)

// NewClickHouse returns a sink writing to database.anomalies on conn. The
// connection belongs to the caller.
func NewClickHouse(conn driver.Conn, database string, cfg ClickHouseConfig) (*ClickHouse, error) {
	if !store.ValidIdent(database) {
		return nil, fmt.Errorf("clickhouse database %q: must be a plain identifier (letters, digits, _)", database)
	}
	return &ClickHouse{
		conn:   conn,
		insert: "INSERT INTO " + database + ".anomalies (" + anomaliesColumns + ")",
		retry:  retrier{retries: cfg.MaxRetries, base: 500 * time.Millisecond},
		now:    time.Now,
	}, nil
}

// Name is "clickhouse".
func (*ClickHouse) Name() string { return "clickhouse" }

// Notify inserts the alerts in one batch, retried as a whole.
func (c *ClickHouse) Notify(ctx context.Context, alerts []anomaly.Alert) (Result, error) {
	retries, err := c.retry.do(ctx, func(ctx context.Context) error { return c.write(ctx, alerts) })
	if err != nil {
		return Result{Failed: len(alerts), Retries: retries}, fmt.Errorf("insert anomalies: %w", err)
	}
	return Result{Sent: len(alerts), Retries: retries}, nil
}

func (c *ClickHouse) write(ctx context.Context, alerts []anomaly.Alert) (err error) {
	batch, err := c.conn.PrepareBatch(ctx, c.insert)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	sent := false
	defer func() {
		if !sent {
			_ = batch.Abort() // frees the pooled connection
		}
	}()
	now := c.now().UTC()
	for _, a := range alerts {
		ends := time.Unix(0, 0).UTC() // 0 while firing
		updated := now
		if a.Status == anomaly.StatusResolved {
			if !a.EndsAt.IsZero() {
				ends = a.EndsAt.UTC()
			}
			// A resolution is the last state of an episode (a new episode
			// has a new fingerprint): give it a later version so it wins
			// over a firing row written in the same second.
			updated = now.Add(time.Second)
		}
		if err := batch.Append(a.Fingerprint, a.TenantID, a.Metric, a.Kind, a.Integration, string(a.Status), string(a.Severity),
			a.Observed, a.Baseline, a.Ratio, a.StartsAt.UTC(), ends, a.Summary, updated); err != nil {
			return fmt.Errorf("append: %w", err)
		}
	}
	sent = true
	if err := batch.Send(); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return nil
}
