package pgstat

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// testClock is a settable clock for the stage.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// resetStatements empties pg_stat_statements for the test's database only.
func resetStatements(t *testing.T, e *pgEnv) {
	t.Helper()
	ctx := context.Background()
	sup, err := pgx.Connect(ctx, e.super)
	if err != nil {
		t.Fatal(err)
	}
	defer sup.Close(ctx)
	if _, err := sup.Exec(ctx, "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0)"); err != nil {
		t.Fatal(err)
	}
}

func tracked(s *Stage) int {
	n := 0
	for _, d := range s.dbs {
		n += len(d.seen)
	}
	return n
}

// TestStageForgetsUnlistedStatements: what the stage remembers per finding
// goes once pg_stat_statements has not listed it for the retention, and
// what it remembers beyond the listed ones is bounded; a statement that
// comes back after it was forgotten alerts again as new.
func TestStageForgetsUnlistedStatements(t *testing.T) {
	e := setupPG(t)
	ctx := context.Background()
	clk := &testClock{t: time.Unix(1_800_000_000, 0)}
	al := &recordingAlerter{}
	s := newTestStageConfig(t, e.auditor, func(c *Config) { c.StatementRetention, c.MaxTrackedStatements = time.Hour, 3 },
		WithAlerter(al), WithClock(clk.now))

	runWorkload(t, e.app, workload)
	s.tick(ctx)
	findings := tracked(s)
	if findings < 10 {
		t.Fatalf("%d findings tracked after the workload, want the workload's (over 10)", findings)
	}
	// Listed statements are all kept, even beyond the bound of 3.
	clk.advance(time.Minute)
	s.tick(ctx)
	if got := tracked(s); got != findings {
		t.Fatalf("%d tracked while pg_stat_statements lists them all, want %d", got, findings)
	}
	// No longer listed: the bound applies at once...
	resetStatements(t, e)
	clk.advance(time.Minute)
	s.tick(ctx)
	if got := tracked(s); got != 3 {
		t.Fatalf("%d tracked after pg_stat_statements dropped them, want the bound of 3", got)
	}
	// ...and the retention forgets the rest.
	clk.advance(time.Hour)
	s.tick(ctx)
	if got := tracked(s); got != 0 {
		t.Fatalf("%d tracked an hour after pg_stat_statements dropped them, want 0", got)
	}
	// An unscoped statement seen again is new again.
	runWorkload(t, e.app, []workItem{workload[16]})
	clk.advance(time.Minute)
	s.tick(ctx)
	if len(al.got) != 1 || al.got[0].Query != workload[16].sql {
		t.Fatalf("alerts after the statement came back: %+v, want one for %q", al.got, workload[16].sql)
	}
	if al.got[0].FirstSeen != clk.now().UTC().Truncate(time.Second) {
		t.Fatalf("first_seen %v, want the pull that saw it again (%v)", al.got[0].FirstSeen, clk.now())
	}
}
