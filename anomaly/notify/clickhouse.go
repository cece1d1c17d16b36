package notify

import (
	"context"
	"fmt"
	"time"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/collector/store"
)

// AnomalyWriter stores rows of the anomalies table; *store.Store is one.
type AnomalyWriter interface {
	InsertAnomalies(ctx context.Context, rows []store.AnomalyRow) error
}

var _ AnomalyWriter = (*store.Store)(nil)

// ClickHouse writes alerts to the anomalies table, one batch insert per
// Notify call. The table is a ReplacingMergeTree(updated_at), so the last
// row of an episode (its resolution) wins.
type ClickHouse struct {
	db    AnomalyWriter
	retry retrier
	now   func() time.Time
}

var _ Notifier = (*ClickHouse)(nil)

// NewClickHouse returns a sink writing alerts through db.
func NewClickHouse(db AnomalyWriter, cfg ClickHouseConfig) *ClickHouse {
	return &ClickHouse{
		db:    db,
		retry: retrier{retries: cfg.MaxRetries, base: 500 * time.Millisecond},
		now:   time.Now,
	}
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

func (c *ClickHouse) write(ctx context.Context, alerts []anomaly.Alert) error {
	return c.db.InsertAnomalies(ctx, anomalyRows(alerts, c.now().UTC()))
}

// anomalyRows gives each alert its row, written at now.
func anomalyRows(alerts []anomaly.Alert, now time.Time) []store.AnomalyRow {
	rows := make([]store.AnomalyRow, len(alerts))
	for i, a := range alerts {
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
		rows[i] = store.AnomalyRow{Fingerprint: a.Fingerprint, TenantID: a.TenantID, Metric: a.Metric, Kind: a.Kind,
			Integration: a.Integration, Status: string(a.Status), Severity: string(a.Severity), Observed: a.Observed,
			Baseline: a.Baseline, Ratio: a.Ratio, StartsAt: a.StartsAt.UTC(), EndsAt: ends, Summary: a.Summary, UpdatedAt: updated}
	}
	return rows
}
