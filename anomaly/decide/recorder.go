package decide

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/limiter"
)

// ClickHouseRecorder appends decisions to <database>.decisions.
type ClickHouseRecorder struct {
	conn  driver.Conn
	query string
}

// NewClickHouseRecorder returns a recorder writing to database.decisions
// through conn (store.Store.Conn()).
func NewClickHouseRecorder(conn driver.Conn, database string) (*ClickHouseRecorder, error) {
	if !store.ValidIdent(database) {
		return nil, fmt.Errorf("decisions recorder: invalid database name %q", database)
	}
	return &ClickHouseRecorder{conn: conn, query: "INSERT INTO " + database +
		".decisions (tenant_id, scope, action, rate_per_sec, burst, issued_at, expires_at, reason, source, anomaly_id, recorded_at)"}, nil
}

// Record inserts ds in one batch. The batch is always sent or aborted.
func (r *ClickHouseRecorder) Record(ctx context.Context, ds []limiter.Decision) error {
	if len(ds) == 0 {
		return nil
	}
	batch, err := r.conn.PrepareBatch(ctx, r.query)
	if err != nil {
		return fmt.Errorf("prepare decisions batch: %w", err)
	}
	now := time.Now().UTC()
	for _, d := range ds {
		if err := batch.Append(d.TenantID, d.Scope, string(d.Action), d.RatePerSec, d.Burst,
			d.IssuedAt.UTC(), d.ExpiresAt.UTC(), d.Reason, string(d.Source), d.AnomalyID, now); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("append decision: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert decisions: %w", err)
	}
	return nil
}
