package decide

import (
	"context"
	"time"

	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/limiter"
)

// KV operations of a Record.
const (
	OpPut    = "put"
	OpDelete = "delete"
	OpPurge  = "purge"
)

// Record is one revision of the decisions bucket, for the audit table.
type Record struct {
	Key      string    // KV key
	Revision uint64    // KV revision (the stream sequence)
	Op       string    // OpPut, OpDelete or OpPurge
	At       time.Time // when NATS stored it
	// Decision holds the fields of a put that could be read; empty for a
	// delete or purge.
	Decision limiter.Decision
	// Verified: the put's signature verified with a trusted key and every
	// check limiters make passed. A delete or purge carries no signature.
	Verified bool
	// Reject is why a put did not verify (limiter.RejectReasons), "" when
	// it did and for a delete or purge.
	Reject string
	// Raw is the value as stored, kept for a put that did not verify (it
	// is at most limiter.MaxDecisionSize bytes: the bucket's value limit).
	Raw []byte
}

// DecisionStore is the decisions table; *store.Store is one.
type DecisionStore interface {
	InsertDecisions(ctx context.Context, rows []store.DecisionRow) error
	LastDecisionRevision(ctx context.Context) (uint64, error)
	DecisionRevisions(ctx context.Context, revs []uint64) (map[uint64]bool, error)
}

var _ DecisionStore = (*store.Store)(nil)

// ClickHouseRecorder appends records to the decisions table.
type ClickHouseRecorder struct {
	db DecisionStore
}

// NewClickHouseRecorder returns a recorder writing through db.
func NewClickHouseRecorder(db DecisionStore) *ClickHouseRecorder {
	return &ClickHouseRecorder{db: db}
}

// Record inserts rs in one batch. Times outside what a DateTime holds
// (only an unverified value can carry them) are clamped into its range;
// the exact value is in raw.
func (r *ClickHouseRecorder) Record(ctx context.Context, rs []Record) error {
	return r.db.InsertDecisions(ctx, decisionRows(rs, time.Now().UTC()))
}

// decisionRows gives each record its row, recorded at now.
func decisionRows(rs []Record, now time.Time) []store.DecisionRow {
	rows := make([]store.DecisionRow, len(rs))
	for i, rec := range rs {
		d := rec.Decision
		tenant, scope, err := limiter.ParseKey(rec.Key)
		if err != nil {
			tenant, scope = d.TenantID, d.Scope
		}
		issued, expires := d.IssuedAt, d.ExpiresAt
		if issued.IsZero() {
			issued = rec.At
		}
		if expires.IsZero() {
			expires = rec.At
		}
		var raw string
		if !rec.Verified && rec.Op == OpPut {
			raw = string(rec.Raw)
		}
		rows[i] = store.DecisionRow{TenantID: tenant, Scope: scope, Action: string(d.Action), RatePerSec: d.RatePerSec,
			Burst: d.Burst, IssuedAt: clampTime(issued), ExpiresAt: clampTime(expires), Reason: d.Reason,
			Source: string(d.Source), AnomalyID: d.AnomalyID, RecordedAt: now, KVKey: rec.Key, KVRevision: rec.Revision,
			KVOp: rec.Op, Verified: rec.Verified, KeyID: d.KeyID, RejectReason: rec.Reject, Raw: raw,
			Mode: recordMode(rec)}
	}
	return rows
}

// LastRevision returns the highest KV revision recorded, 0 if none.
func (r *ClickHouseRecorder) LastRevision(ctx context.Context) (uint64, error) {
	return r.db.LastDecisionRevision(ctx)
}

// Recorded returns which of revs are recorded already.
func (r *ClickHouseRecorder) Recorded(ctx context.Context, revs []uint64) (map[uint64]bool, error) {
	return r.db.DecisionRevisions(ctx, revs)
}

// clampTime keeps t within what a ClickHouse DateTime holds, so it never
// wraps.
func clampTime(t time.Time) time.Time {
	switch {
	case t.Before(limiter.MinTimestamp):
		return limiter.MinTimestamp
	case t.After(limiter.MaxTimestamp):
		return limiter.MaxTimestamp
	}
	return t.UTC()
}

// recordMode is the mode column of a record: the put's mode, with the
// absent field written as enforce; "" for a delete or purge.
func recordMode(rec Record) string {
	if rec.Op != OpPut {
		return ""
	}
	return string(modeOf(rec.Decision))
}
