package pgstat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Option configures a Stage.
type Option func(*Stage)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(s *Stage) { s.log = l } }

// WithRegisterer registers the stage's metrics (default: not registered).
func WithRegisterer(r prometheus.Registerer) Option { return func(s *Stage) { s.reg = r } }

// WithWriter stores findings after each pull of Run.
func WithWriter(w FindingWriter) Option { return func(s *Stage) { s.writer = w } }

// WithAlerter is told about new unscoped statements during Run.
func WithAlerter(a Alerter) Option { return func(s *Stage) { s.alerter = a } }

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option { return func(s *Stage) { s.now = now } }

const (
	// DefaultStatementRetention is how long the stage remembers a finding
	// pg_stat_statements no longer lists.
	DefaultStatementRetention = 24 * time.Hour
	// DefaultMaxTrackedStatements bounds the findings remembered per
	// database beyond those pg_stat_statements lists now.
	DefaultMaxTrackedStatements = 10000
)

type findingKey struct {
	queryID int64
	userID  uint32
}

// seenState is what the stage remembers about one finding between pulls.
type seenState struct {
	firstSeen time.Time // the first pull it was a finding
	lastSeen  time.Time // the last pull its calls grew (or firstSeen)
	listed    time.Time // the last pull pg_stat_statements listed it
	listedAt  int       // that pull's number (dbState.pulls)
	unscoped  bool      // counted as a known unscoped statement (alerted or seeded)
}

// dbState is what the stage keeps per DSN between pulls.
type dbState struct {
	index    int
	dsn      string
	name     string
	conn     *pgx.Conn
	puller   *puller
	analyzer *Analyzer
	seen     map[findingKey]*seenState // pruned by prune
	pulls    int
}

func (d *dbState) label() string {
	if d.name != "" {
		return d.name
	}
	return fmt.Sprintf("dsn[%d]", d.index)
}

// Stage is the Postgres tenant-isolation auditor.
type Stage struct {
	cfg     Config
	log     *slog.Logger
	reg     prometheus.Registerer
	writer  FindingWriter
	alerter Alerter
	now     func() time.Time
	m       *metrics

	retention  time.Duration
	maxTracked int

	mu     sync.Mutex
	dbs    []*dbState
	closed bool
}

// New validates cfg and builds the stage; it connects lazily.
func New(cfg Config, opts ...Option) (*Stage, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(cfg.DSNs) == 0 {
		return nil, errors.New("pgstat.dsns: must not be empty")
	}
	s := &Stage{cfg: cfg, log: slog.New(slog.DiscardHandler), now: time.Now,
		retention: cfg.StatementRetention, maxTracked: cfg.MaxTrackedStatements}
	for _, o := range opts {
		o(s)
	}
	s.log = s.log.With("component", "pgstat")
	m, err := newMetrics(s.reg)
	if err != nil {
		return nil, err
	}
	s.m = m
	for i, d := range cfg.DSNs {
		s.dbs = append(s.dbs, &dbState{index: i, dsn: d, seen: map[findingKey]*seenState{}})
	}
	return s, nil
}

// Run pulls every Interval, stores findings, updates the gauge and
// alerts on new unscoped statements, until ctx is done. A failing
// database is logged and retried at the next tick.
func (s *Stage) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		s.tick(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Tick runs one pull of every database with all outputs, as Run does.
func (s *Stage) tick(ctx context.Context) {
	for _, d := range s.dbs {
		if ctx.Err() != nil {
			return
		}
		start := time.Now()
		rep, err := s.pullDB(ctx, d)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.m.pullErrors.WithLabelValues(d.label()).Inc()
			s.log.Error("pull failed", "database", d.label(), "err", err)
			continue
		}
		if err := s.publish(ctx, d, rep); err != nil {
			s.log.Error("publish findings", "database", d.label(), "err", err)
		}
		s.log.Debug("pulled", "database", d.label(), "count", rep.Statements, "duration", time.Since(start))
	}
}

// publish writes findings active in this interval, sets the gauge and
// alerts on unscoped statements not seen in an earlier pull.
func (s *Stage) publish(ctx context.Context, d *dbState, rep *DatabaseReport) error {
	counts := map[Class]float64{ClassUnscoped: 0, ClassMultiTenant: 0, ClassUnknown: 0}
	var write []Finding
	var errs []error
	for _, f := range rep.Findings {
		counts[f.Class]++
		k := findingKey{f.QueryID, f.UserID}
		if f.Calls > 0 || d.pulls == 1 {
			write = append(write, f)
		}
		if st := d.seen[k]; f.Class == ClassUnscoped && st != nil && !st.unscoped {
			st.unscoped = true
			if d.pulls > 1 && s.alerter != nil {
				if err := s.alerter.NewUnscoped(ctx, f); err != nil {
					errs = append(errs, fmt.Errorf("alert queryid %d: %w", f.QueryID, err))
				}
			}
		}
	}
	for c, n := range counts {
		s.m.findings.WithLabelValues(string(c), rep.Database).Set(n)
	}
	if s.writer != nil && len(write) > 0 {
		if err := s.writer.InsertFindings(ctx, findingRows(write)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Scan pulls every database once and returns findings and RLS lints. It
// writes nothing and sends no alert. The first error stops the scan.
func (s *Stage) Scan(ctx context.Context) (*Report, error) {
	rep := &Report{Version: ReportVersion}
	for _, d := range s.dbs {
		r, err := s.pullDB(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.label(), err)
		}
		rep.Databases = append(rep.Databases, *r)
	}
	return rep, nil
}

// Parses counts statement texts parsed so far across databases.
func (s *Stage) Parses() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n uint64
	for _, d := range s.dbs {
		if d.analyzer != nil {
			n += d.analyzer.Parses()
		}
	}
	return n
}

// TextFetches counts query texts fetched from pg_stat_statements so far.
func (s *Stage) TextFetches() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n uint64
	for _, d := range s.dbs {
		if d.puller != nil {
			n += d.puller.textFetches
		}
	}
	return n
}

// Close closes the connections. It is idempotent.
func (s *Stage) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, d := range s.dbs {
		s.drop(ctx, d)
	}
	return nil
}

func (s *Stage) drop(ctx context.Context, d *dbState) {
	if d.conn != nil {
		_ = d.conn.Close(ctx)
	}
	d.conn, d.puller = nil, nil
}

// pullDB connects if needed, reloads the catalog, pulls and analyses.
func (s *Stage) pullDB(ctx context.Context, d *dbState) (*DatabaseReport, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, errors.New("pgstat: stage closed")
	}
	if d.conn == nil {
		conn, err := pgx.Connect(ctx, d.dsn)
		if err != nil {
			// pgx errors can quote the DSN; name it by index only.
			return nil, fmt.Errorf("connect: %w", redact(err, d.dsn))
		}
		p, err := newPuller(ctx, conn)
		if err != nil {
			_ = conn.Close(ctx)
			return nil, err
		}
		s.mu.Lock()
		d.conn, d.puller, d.name = conn, p, p.database
		s.mu.Unlock()
	}
	rep, err := s.analyzeDB(ctx, d)
	if err != nil {
		s.mu.Lock()
		s.drop(ctx, d)
		s.mu.Unlock()
		return nil, err
	}
	return rep, nil
}

func redact(err error, dsn string) error {
	if dsn == "" || !strings.Contains(err.Error(), dsn) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), dsn, "<dsn>"))
}

func (s *Stage) analyzeDB(ctx context.Context, d *dbState) (*DatabaseReport, error) {
	cat, err := LoadCatalog(ctx, d.conn, s.cfg)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if d.analyzer == nil || d.analyzer.Catalog().Fingerprint() != cat.Fingerprint() {
		d.analyzer = NewAnalyzer(cat)
	}
	an := d.analyzer
	s.mu.Unlock()
	stmts, err := d.puller.pull(ctx)
	if err != nil {
		return nil, err
	}
	d.pulls++
	before := an.Parses()
	now := s.now().UTC().Truncate(time.Second)
	rep := &DatabaseReport{Database: d.puller.database, Extension: d.puller.version, Statements: len(stmts)}
	for _, t := range cat.TenantTables() {
		rep.TenantTables = append(rep.TenantTables, t.QName())
	}
	merged := map[findingKey]*Finding{}
	appRoles := map[uint32]*Role{}
	for _, st := range analyzeAll(an, stmts, cat, s.cfg.MinCalls) {
		if r := cat.Roles[st.stmt.UserID]; r != nil && !r.Super {
			appRoles[r.OID] = r
		}
		a := st.res
		class := a.Class()
		if class == ClassClean {
			continue
		}
		k := findingKey{st.stmt.QueryID, st.stmt.UserID}
		if f := merged[k]; f != nil {
			f.Calls += st.stmt.DeltaCalls
			f.TotalExecTimeMs += st.stmt.DeltaMs
			if st.stmt.DeltaCalls > 0 {
				d.seen[k].lastSeen = now
				f.LastSeen = now
			}
			continue
		}
		role := ""
		if r := cat.Roles[st.stmt.UserID]; r != nil {
			role = r.Name
		}
		seen := d.seen[k]
		if seen == nil {
			seen = &seenState{firstSeen: now}
			d.seen[k] = seen
		}
		seen.listed, seen.listedAt = now, d.pulls
		if st.stmt.DeltaCalls > 0 || seen.lastSeen.IsZero() {
			seen.lastSeen = now
		}
		f := &Finding{
			Database: rep.Database, QueryID: st.stmt.QueryID, UserID: st.stmt.UserID, Role: role,
			Class: class, Tables: a.Unrestricted(), Uses: a.Uses, Query: st.stmt.Text, Reason: a.Reason,
			Calls: st.stmt.DeltaCalls, TotalExecTimeMs: st.stmt.DeltaMs,
			FirstSeen: seen.firstSeen, LastSeen: seen.lastSeen, ObservedAt: now,
		}
		merged[k] = f
	}
	for _, f := range merged {
		rep.Findings = append(rep.Findings, *f)
	}
	// A statement listed but below min_calls, or clean under a new
	// catalog, is still listed: keep what is remembered about it.
	for i := range stmts {
		if seen := d.seen[findingKey{stmts[i].QueryID, stmts[i].UserID}]; seen != nil {
			seen.listed, seen.listedAt = now, d.pulls
		}
	}
	if n := s.prune(d, now); n > 0 {
		s.log.Debug("forgot statements pg_stat_statements no longer lists", "database", d.label(), "count", n)
	}
	sort.Slice(rep.Findings, func(i, j int) bool {
		a, b := rep.Findings[i], rep.Findings[j]
		if a.Class != b.Class {
			return a.Class < b.Class
		}
		if a.QueryID != b.QueryID {
			return a.QueryID < b.QueryID
		}
		return a.UserID < b.UserID
	})
	roles := make([]*Role, 0, len(appRoles))
	for _, r := range appRoles {
		roles = append(roles, r)
	}
	sort.Slice(roles, func(i, j int) bool { return roles[i].Name < roles[j].Name })
	rep.Lints = AuditRLS(cat, roles)
	s.m.parsed.Add(float64(an.Parses() - before))
	return rep, nil
}

// prune forgets findings pg_stat_statements has not listed for the
// retention, then the longest unlisted beyond maxTracked. Findings listed
// by this pull are kept. It returns how many it forgot.
func (s *Stage) prune(d *dbState, now time.Time) int {
	n := 0
	var unlisted []findingKey
	for k, st := range d.seen {
		switch {
		case st.listedAt == d.pulls:
		case now.Sub(st.listed) >= s.retention:
			delete(d.seen, k)
			n++
		default:
			unlisted = append(unlisted, k)
		}
	}
	over := len(d.seen) - s.maxTracked
	if over <= 0 {
		return n
	}
	sort.Slice(unlisted, func(i, j int) bool { return d.seen[unlisted[i]].listed.Before(d.seen[unlisted[j]].listed) })
	for _, k := range unlisted[:min(over, len(unlisted))] {
		delete(d.seen, k)
		n++
	}
	return n
}
