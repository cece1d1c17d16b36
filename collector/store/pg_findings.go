package store

import (
	"context"
	"time"
)

// FindingRow is one row of pg_findings: a statement of a Postgres
// database whose tenant scope the audit judged. The table is a
// ReplacingMergeTree(observed_at) keyed by (database, queryid, userid), so
// the latest observation of a statement wins.
type FindingRow struct {
	Database        string
	QueryID         int64
	UserID          uint32
	Role            string
	Query           string
	Tables          []string
	Class           string
	Calls           uint64
	TotalExecTimeMs float64
	FirstSeen       time.Time
	LastSeen        time.Time
	ObservedAt      time.Time
}

// FindingColumns is the column list InsertFindings names.
const FindingColumns = "database, queryid, userid, role, query, tables, class, calls, total_exec_time_ms, " +
	"first_seen, last_seen, observed_at"

// InsertFindings writes rows with one insert.
func (s *Store) InsertFindings(ctx context.Context, rows []FindingRow) error {
	return insertRows(ctx, s, "pg_findings", FindingColumns, rows, func(r *FindingRow) []any {
		tables := r.Tables
		if tables == nil {
			tables = emptyStrings
		}
		return []any{r.Database, r.QueryID, r.UserID, r.Role, r.Query, tables, r.Class, r.Calls, r.TotalExecTimeMs,
			r.FirstSeen, r.LastSeen, r.ObservedAt}
	})
}
