package store

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// DecisionRow is one row of the decisions table: one revision of the
// decisions bucket, with the decision it held (empty for a delete or
// purge).
type DecisionRow struct {
	TenantID     string
	Scope        string
	Action       string
	RatePerSec   float64
	Burst        uint32
	IssuedAt     time.Time
	ExpiresAt    time.Time
	Reason       string
	Source       string
	AnomalyID    string
	RecordedAt   time.Time
	KVKey        string
	KVRevision   uint64
	KVOp         string
	Verified     bool
	KeyID        string
	RejectReason string
	Raw          string
	// Mode is the decision's mode: "enforce" or "shadow"; "" for a delete
	// or purge.
	Mode string
}

// DecisionColumns is the column list InsertDecisions names.
const DecisionColumns = "tenant_id, scope, action, rate_per_sec, burst, issued_at, expires_at, reason, source, anomaly_id, recorded_at, " +
	"kv_key, kv_revision, kv_op, verified, key_id, reject_reason, raw, mode"

// InsertDecisions writes rows with one insert.
func (s *Store) InsertDecisions(ctx context.Context, rows []DecisionRow) error {
	return insertRows(ctx, s, "decisions", DecisionColumns, rows, func(r *DecisionRow) []any {
		return []any{r.TenantID, r.Scope, r.Action, r.RatePerSec, r.Burst, r.IssuedAt, r.ExpiresAt, r.Reason, r.Source,
			r.AnomalyID, r.RecordedAt, r.KVKey, r.KVRevision, r.KVOp, boolUInt8(r.Verified), r.KeyID, r.RejectReason, r.Raw, r.Mode}
	})
}

// LastDecisionRevision returns the highest KV revision in decisions, 0 if
// none.
func (s *Store) LastDecisionRevision(ctx context.Context) (uint64, error) {
	var rev uint64
	if err := s.conn.QueryRow(ctx, "SELECT max(kv_revision) FROM "+s.Table("decisions")).Scan(&rev); err != nil {
		return 0, fmt.Errorf("read the last recorded revision: %w", err)
	}
	return rev, nil
}

// DecisionRevisions returns which of revs decisions holds.
func (s *Store) DecisionRevisions(ctx context.Context, revs []uint64) (map[uint64]bool, error) {
	out := map[uint64]bool{}
	if len(revs) == 0 {
		return out, nil
	}
	rows, err := s.conn.Query(ctx, "SELECT DISTINCT kv_revision FROM "+s.Table("decisions")+
		" WHERE kv_revision >= ? AND kv_revision <= ?", slices.Min(revs), slices.Max(revs))
	if err != nil {
		return nil, fmt.Errorf("read recorded revisions: %w", err)
	}
	defer rows.Close()
	want := make(map[uint64]bool, len(revs))
	for _, rev := range revs {
		want[rev] = true
	}
	for rows.Next() {
		var rev uint64
		if err := rows.Scan(&rev); err != nil {
			return nil, fmt.Errorf("read recorded revisions: %w", err)
		}
		if want[rev] {
			out[rev] = true
		}
	}
	return out, rows.Err()
}

func boolUInt8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
