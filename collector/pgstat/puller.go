package pgstat

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoExtension: pg_stat_statements is not installed in the database.
var ErrNoExtension = errors.New("pg_stat_statements is not installed")

// ErrInsufficientPrivilege: the role cannot read other roles' statements.
var ErrInsufficientPrivilege = errors.New("role lacks pg_read_all_stats")

// StmtKey identifies one pg_stat_statements entry.
type StmtKey struct {
	UserID   uint32
	DBID     uint32
	QueryID  int64
	Toplevel bool
}

// Stmt is one entry with its totals and its change since the last pull.
type Stmt struct {
	StmtKey
	Calls      uint64
	TotalMs    float64
	DeltaCalls uint64
	DeltaMs    float64
	Text       string
	StatsSince time.Time
}

type counters struct {
	calls   uint64
	totalMs float64
	since   time.Time
}

// puller reads pg_stat_statements of one database. It never resets it.
type puller struct {
	conn       *pgx.Conn
	database   string
	dbid       uint32
	version    string
	major      int
	minor      int
	fn         string // qualified pg_stat_statements function
	info       string // qualified pg_stat_statements_info view, "" before 1.9
	statsReset time.Time
	prev       map[StmtKey]counters
	texts      map[int64]string
	// textFetches counts query texts fetched; an unchanged workload fetches none.
	textFetches uint64
	pulls       int
}

// newPuller checks the extension and the role's privileges.
func newPuller(ctx context.Context, conn *pgx.Conn) (*puller, error) {
	p := &puller{conn: conn, prev: map[StmtKey]counters{}, texts: map[int64]string{}}
	var schema string
	err := conn.QueryRow(ctx, `SELECT current_database(), d.oid, coalesce(e.extversion, ''), coalesce(n.nspname, '')
		FROM pg_database d
		LEFT JOIN pg_extension e ON e.extname = 'pg_stat_statements'
		LEFT JOIN pg_namespace n ON n.oid = e.extnamespace
		WHERE d.datname = current_database()`).Scan(&p.database, &p.dbid, &p.version, &schema)
	if err != nil {
		return nil, fmt.Errorf("read pg_stat_statements version: %w", err)
	}
	if p.version == "" {
		return nil, fmt.Errorf("database %s: %w: run CREATE EXTENSION pg_stat_statements (with pg_stat_statements in shared_preload_libraries)", p.database, ErrNoExtension)
	}
	maj, min, ok := strings.Cut(p.version, ".")
	p.major, _ = strconv.Atoi(maj)
	if ok {
		p.minor, _ = strconv.Atoi(min)
	}
	p.fn = pgx.Identifier{schema, "pg_stat_statements"}.Sanitize()
	if p.atLeast(1, 9) {
		p.info = pgx.Identifier{schema, "pg_stat_statements_info"}.Sanitize()
	}
	var role string
	var allowed bool
	err = conn.QueryRow(ctx, `SELECT current_user::text, r.rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(&role, &allowed)
	if err != nil {
		return nil, fmt.Errorf("check privileges: %w", err)
	}
	if !allowed {
		return nil, fmt.Errorf("database %s: %w: role %q sees only its own statements; run GRANT pg_read_all_stats TO %s",
			p.database, ErrInsufficientPrivilege, role, pgx.Identifier{role}.Sanitize())
	}
	return p, nil
}

func (p *puller) atLeast(major, minor int) bool {
	return p.major > major || (p.major == major && p.minor >= minor)
}

// statsQuery selects the counters, naming the columns of the installed
// version: total_time before 1.8, total_exec_time after; toplevel from
// 1.9; stats_since from 1.11.
func (p *puller) statsQuery() string {
	total := "total_exec_time"
	if !p.atLeast(1, 8) {
		total = "total_time"
	}
	toplevel := "true"
	if p.atLeast(1, 9) {
		toplevel = "toplevel"
	}
	since := "NULL::timestamptz"
	if p.atLeast(1, 11) {
		since = "stats_since"
	}
	return fmt.Sprintf(`SELECT userid, dbid, queryid, %s, calls, %s, %s FROM %s(false) WHERE dbid = $1 AND queryid IS NOT NULL`,
		toplevel, total, since, p.fn)
}

// pull reads the counters, computes deltas and fills in text for
// queryids not seen before.
func (p *puller) pull(ctx context.Context) ([]Stmt, error) {
	rebase := false
	if p.info != "" {
		var reset time.Time
		if err := p.conn.QueryRow(ctx, "SELECT stats_reset FROM "+p.info).Scan(&reset); err != nil {
			return nil, fmt.Errorf("read %s: %w", p.info, err)
		}
		if !p.statsReset.IsZero() && !reset.Equal(p.statsReset) {
			rebase = true
		}
		p.statsReset = reset
	}
	rows, err := p.conn.Query(ctx, p.statsQuery(), p.dbid)
	if err != nil {
		return nil, fmt.Errorf("read pg_stat_statements: %w", err)
	}
	var out []Stmt
	for rows.Next() {
		var (
			s     Stmt
			since *time.Time
			calls int64
		)
		if err := rows.Scan(&s.UserID, &s.DBID, &s.QueryID, &s.Toplevel, &calls, &s.TotalMs, &since); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read pg_stat_statements: %w", err)
		}
		if calls > 0 {
			s.Calls = uint64(calls)
		}
		if since != nil {
			s.StatsSince = *since
		}
		out = append(out, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pg_stat_statements: %w", err)
	}

	next := make(map[StmtKey]counters, len(out))
	for i := range out {
		s := &out[i]
		prev, seen := p.prev[s.StmtKey]
		backwards := seen && (s.Calls < prev.calls || s.TotalMs < prev.totalMs || !s.StatsSince.Equal(prev.since))
		if !seen || rebase || backwards {
			s.DeltaCalls, s.DeltaMs = s.Calls, s.TotalMs
		} else {
			s.DeltaCalls, s.DeltaMs = s.Calls-prev.calls, s.TotalMs-prev.totalMs
		}
		next[s.StmtKey] = counters{s.Calls, s.TotalMs, s.StatsSince}
	}
	p.prev = next
	p.pulls++

	if err := p.fillTexts(ctx, out); err != nil {
		return nil, err
	}
	return out, nil
}

// fillTexts fetches text only for queryids it does not hold, and forgets
// queryids that left pg_stat_statements.
func (p *puller) fillTexts(ctx context.Context, stmts []Stmt) error {
	present := make(map[int64]bool, len(stmts))
	var missing []int64
	for _, s := range stmts {
		if present[s.QueryID] {
			continue
		}
		present[s.QueryID] = true
		if _, ok := p.texts[s.QueryID]; !ok {
			missing = append(missing, s.QueryID)
		}
	}
	for id := range p.texts {
		if !present[id] {
			delete(p.texts, id)
		}
	}
	if len(missing) > 0 {
		rows, err := p.conn.Query(ctx, fmt.Sprintf(
			`SELECT DISTINCT ON (queryid) queryid, query FROM %s(true) WHERE dbid = $1 AND queryid = ANY($2)`, p.fn),
			p.dbid, missing)
		if err != nil {
			return fmt.Errorf("read query texts: %w", err)
		}
		for rows.Next() {
			var id int64
			var text *string
			if err := rows.Scan(&id, &text); err != nil {
				rows.Close()
				return fmt.Errorf("read query texts: %w", err)
			}
			if text != nil {
				p.texts[id] = *text
				p.textFetches++
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read query texts: %w", err)
		}
	}
	for i := range stmts {
		stmts[i].Text = p.texts[stmts[i].QueryID]
	}
	return nil
}
