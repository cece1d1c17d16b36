package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// maxEpisodeMetrics bounds the metrics one LatestAnomalies call names.
const maxEpisodeMetrics = 16

// LatestAnomalies returns the latest state of every episode (tenant,
// fingerprint, start) of the given metrics that started at or after
// since, oldest first: what was really recorded of each alert, whatever
// replica wrote it. A tenant's new owner reads it to continue the open
// episodes under their fingerprints and to know which spend thresholds
// were alerted. The latest row is the one with the greatest updated_at
// (a resolution is written a second after its firing row), taken with
// argMax rather than FINAL so that the status filter is applied after
// the rows of an episode are merged, on every server version.
func (s *Store) LatestAnomalies(ctx context.Context, metrics []string, since time.Time) ([]AnomalyRow, error) {
	if len(metrics) == 0 {
		return nil, nil
	}
	if len(metrics) > maxEpisodeMetrics {
		return nil, fmt.Errorf("read episodes: %d metrics, at most %d", len(metrics), maxEpisodeMetrics)
	}
	args := make([]any, 0, len(metrics)+1)
	for _, m := range metrics {
		if m == "" {
			return nil, errors.New("read episodes: empty metric")
		}
		args = append(args, m)
	}
	args = append(args, since.UTC())
	q := "SELECT tenant_id, fingerprint, starts_at, argMax(metric, updated_at), argMax(kind, updated_at), " +
		"argMax(integration, updated_at), argMax(status, updated_at), argMax(severity, updated_at), " +
		"argMax(observed, updated_at), argMax(baseline, updated_at), argMax(ratio, updated_at), " +
		"argMax(ends_at, updated_at), argMax(summary, updated_at), max(updated_at) FROM " + s.Table("anomalies") +
		" WHERE metric IN (" + strings.TrimSuffix(strings.Repeat("?, ", len(metrics)), ", ") + ") AND starts_at >= ?" +
		" GROUP BY tenant_id, fingerprint, starts_at ORDER BY starts_at, tenant_id, fingerprint"
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read episodes: %w", err)
	}
	defer rows.Close()
	var out []AnomalyRow
	for rows.Next() {
		var r AnomalyRow
		if err := rows.Scan(&r.TenantID, &r.Fingerprint, &r.StartsAt, &r.Metric, &r.Kind, &r.Integration, &r.Status,
			&r.Severity, &r.Observed, &r.Baseline, &r.Ratio, &r.EndsAt, &r.Summary, &r.UpdatedAt); err != nil {
			return nil, fmt.Errorf("read episodes: %w", err)
		}
		r.StartsAt, r.EndsAt, r.UpdatedAt = r.StartsAt.UTC(), r.EndsAt.UTC(), r.UpdatedAt.UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}
