package store

import (
	"context"
	"fmt"
	"time"
)

// AnomalyRow is one row of the anomalies table: one state of an alert
// episode. The table is a ReplacingMergeTree(updated_at), so of the rows of
// an episode (tenant, fingerprint, start) the one with the latest
// UpdatedAt wins.
type AnomalyRow struct {
	Fingerprint string
	TenantID    string
	Metric      string
	Kind        string
	Integration string
	Status      string
	Severity    string
	Observed    float64
	Baseline    float64
	Ratio       float64
	StartsAt    time.Time
	EndsAt      time.Time // the epoch while firing
	Summary     string
	UpdatedAt   time.Time
}

// AnomalyColumns is the column list InsertAnomalies names.
const AnomalyColumns = "fingerprint, tenant_id, metric, kind, integration, status, severity, " +
	"observed, baseline, ratio, starts_at, ends_at, summary, updated_at"

// InsertAnomalies writes rows with one insert.
func (s *Store) InsertAnomalies(ctx context.Context, rows []AnomalyRow) error {
	return insertRows(ctx, s, "anomalies", AnomalyColumns, rows, func(r *AnomalyRow) []any {
		return []any{r.Fingerprint, r.TenantID, r.Metric, r.Kind, r.Integration, r.Status, r.Severity,
			r.Observed, r.Baseline, r.Ratio, r.StartsAt, r.EndsAt, r.Summary, r.UpdatedAt}
	})
}

// MaxAnomalyRatios returns, per tenant, the highest ratio of the anomalies
// of metric that started at or after since.
func (s *Store) MaxAnomalyRatios(ctx context.Context, metric string, since time.Time) (map[string]float64, error) {
	rows, err := s.conn.Query(ctx, "SELECT tenant_id, max(ratio) FROM "+s.Table("anomalies")+
		" WHERE metric = ? AND starts_at >= ? GROUP BY tenant_id", metric, since.UTC())
	if err != nil {
		return nil, fmt.Errorf("read anomalies: %w", err)
	}
	defer rows.Close()
	out := map[string]float64{}
	for rows.Next() {
		var tenant string
		var r float64
		if err := rows.Scan(&tenant, &r); err != nil {
			return nil, fmt.Errorf("read anomalies: %w", err)
		}
		out[tenant] = r
	}
	return out, rows.Err()
}

// FiringAnomalies returns the episodes of metric whose latest row is
// firing, oldest first: what a stage that raises them resumes after a
// restart.
func (s *Store) FiringAnomalies(ctx context.Context, metric string) ([]AnomalyRow, error) {
	rows, err := s.conn.Query(ctx, "SELECT "+AnomalyColumns+" FROM "+s.Table("anomalies")+
		" FINAL WHERE metric = ? AND status = 'firing' ORDER BY starts_at, tenant_id, fingerprint", metric)
	if err != nil {
		return nil, fmt.Errorf("read firing anomalies: %w", err)
	}
	defer rows.Close()
	var out []AnomalyRow
	for rows.Next() {
		var r AnomalyRow
		if err := rows.Scan(&r.Fingerprint, &r.TenantID, &r.Metric, &r.Kind, &r.Integration, &r.Status, &r.Severity,
			&r.Observed, &r.Baseline, &r.Ratio, &r.StartsAt, &r.EndsAt, &r.Summary, &r.UpdatedAt); err != nil {
			return nil, fmt.Errorf("read firing anomalies: %w", err)
		}
		r.StartsAt, r.EndsAt, r.UpdatedAt = r.StartsAt.UTC(), r.EndsAt.UTC(), r.UpdatedAt.UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}
