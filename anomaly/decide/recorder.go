package decide

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

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

// ClickHouseRecorder appends decisions to <database>.decisions.
type ClickHouseRecorder struct {
	conn     driver.Conn
	database string
	query    string
}

// NewClickHouseRecorder returns a recorder writing to database.decisions
// through conn (store.Store.Conn()).
func NewClickHouseRecorder(conn driver.Conn, database string) (*ClickHouseRecorder, error) {
	if !store.ValidIdent(database) {
		return nil, fmt.Errorf("decisions recorder: invalid database name %q", database)
	}
	return &ClickHouseRecorder{conn: conn, database: database, query: "INSERT INTO " + database +
		".decisions (tenant_id, scope, action, rate_per_sec, burst, issued_at, expires_at, reason, source, anomaly_id, recorded_at," +
		" kv_key, kv_revision, kv_op, verified, key_id, reject_reason, raw)"}, nil
}

// Record inserts rs in one batch. The batch is always sent or aborted.
// Times outside what a DateTime holds (only an unverified value can carry
// them) are clamped into its range; the exact value is in raw.
func (r *ClickHouseRecorder) Record(ctx context.Context, rs []Record) error {
	if len(rs) == 0 {
		return nil
	}
	batch, err := r.conn.PrepareBatch(ctx, r.query)
	if err != nil {
		return fmt.Errorf("prepare decisions batch: %w", err)
	}
	now := time.Now().UTC()
	for _, rec := range rs {
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
		if err := batch.Append(tenant, scope, string(d.Action), d.RatePerSec, d.Burst,
			clampTime(issued), clampTime(expires), d.Reason, string(d.Source), d.AnomalyID, now,
			rec.Key, rec.Revision, rec.Op, boolUInt8(rec.Verified), d.KeyID, rec.Reject, raw); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("append decision: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert decisions: %w", err)
	}
	return nil
}

// LastRevision returns the highest KV revision recorded, 0 if none.
func (r *ClickHouseRecorder) LastRevision(ctx context.Context) (uint64, error) {
	var rev uint64
	if err := r.conn.QueryRow(ctx, "SELECT max(kv_revision) FROM "+r.database+".decisions").Scan(&rev); err != nil {
		return 0, fmt.Errorf("read the last recorded revision: %w", err)
	}
	return rev, nil
}

// Recorded returns which of revs are recorded already.
func (r *ClickHouseRecorder) Recorded(ctx context.Context, revs []uint64) (map[uint64]bool, error) {
	out := map[uint64]bool{}
	if len(revs) == 0 {
		return out, nil
	}
	lo, hi := slices.Min(revs), slices.Max(revs)
	rows, err := r.conn.Query(ctx, "SELECT DISTINCT kv_revision FROM "+r.database+".decisions WHERE kv_revision >= ? AND kv_revision <= ?", lo, hi)
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

func boolUInt8(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
