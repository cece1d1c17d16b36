package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/correct"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// cliEnv is a migrated ClickHouse database and a NATS server for CLI tests.
type cliEnv struct {
	st   *store.Store
	ch   string
	nats *testenv.NATSServer
}

func newCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	srv := testenv.NewClickHouseServer(t)
	db := srv.NewDatabase(t)
	st := teststore.On(t, srv, db)
	t.Setenv("TENANTGUARD_CLICKHOUSE_DATABASE", db)
	t.Chdir(t.TempDir())
	return &cliEnv{st: st, ch: srv.Addr, nats: testenv.NATS(t)}
}

// run executes the CLI; it returns stdout, stderr and the exit status.
func (e *cliEnv) run(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	a := newApp(&out, &errb)
	root := a.root()
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append(args, "--clickhouse-addr", e.ch, "--nats-url", e.nats.URL, "--log-level", "error"))
	err := root.ExecuteContext(context.Background())
	code := 0
	if err != nil {
		code = 2
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		errb.WriteString(err.Error())
	}
	return out.String(), errb.String(), code
}

func (e *cliEnv) insert(t *testing.T, rows ...store.Row) {
	t.Helper()
	if err := e.st.InsertEvents(context.Background(), rows, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func (e *cliEnv) cost(t *testing.T, tenant string) string {
	t.Helper()
	var c decimal.Decimal
	if err := e.st.Conn().QueryRow(context.Background(), "SELECT sum(cost) FROM "+e.st.Table("usage_1m")+" WHERE tenant_id = ?", tenant).Scan(&c); err != nil {
		t.Fatal(err)
	}
	return c.StringFixed(2)
}

func costRow(tenant, id string, at time.Time, unit string) store.Row {
	u := decimal.RequireFromString(unit)
	return store.Row{Event: &event.Event{ID: id, TenantID: tenant, Kind: event.KindAPIRequest, Time: at, Quantity: 1},
		Plan: "default", UnitPrice: u, Cost: u, PriceVersion: "default"}
}

func TestCorrectCommand(t *testing.T) {
	env := newCLIEnv(t)
	now := time.Now().UTC()
	for _, id := range []string{"e1", "e2", "e3", "e4", "e5"} {
		env.insert(t, costRow("acme", id, now.Add(-time.Hour), "1"))
	}
	env.insert(t, costRow("globex", "g1", now.Add(-time.Hour), "1"))

	// Usage errors exit 2 and change nothing.
	for _, args := range [][]string{
		{"correct", "--tenant", "acme", "--void", "e1"},                                           // no reason
		{"correct", "--tenant", "acme", "--void", "--quantity", "2", "--reason", "r", "e1"},       // both
		{"correct", "--tenant", "acme", "--reason", "r", "e1"},                                    // neither
		{"correct", "--tenant", "acme.x", "--void", "--reason", "r", "e1"},                        // bad tenant
		{"correct", "--tenant", "acme", "--void", "--reason", "r"},                                // no id
		{"correct", "--tenant", "acme", "--quantity", "-1", "--reason", "r", "--direct", "e1"},    // bad quantity
		{"correct", "--tenant", "acme", "--void", "--reason", "r", "--file", "/nonexistent", "x"}, // id and file
		{"correct", "--tenant", "acme", "--void", "--reason", "r", "--id", "e1", "e1"},            // id twice
		{"correct", "--tenant", "acme", "--void", "--reason", "r", "--direct", "--daemon", "e1"},  // both paths
	} {
		if _, stderr, code := env.run(t, "", args...); code != 2 {
			t.Errorf("%v: exit %d (%s), want 2", args, code, stderr)
		}
	}
	if c := env.cost(t, "acme"); c != "5.00" {
		t.Fatalf("usage errors changed acme's cost to %s", c)
	}

	// --direct: through ClickHouse, with the daemon's rules.
	out, stderr, code := env.run(t, "", "correct", "--tenant", "acme", "--void", "--reason", "dispute 7", "--by", "ops", "--direct", "e1")
	if code != 0 || !strings.Contains(out, "e1\tapplied") || !strings.Contains(stderr, "1 applied") {
		t.Fatalf("void e1: exit %d %q %q", code, out, stderr)
	}
	out, stderr, code = env.run(t, "", "correct", "--tenant", "acme", "--void", "--reason", "again", "--direct", "e1")
	if code != 1 || !strings.Contains(out, "already_voided") {
		t.Fatalf("double void: exit %d %q %q, want 1 and already_voided", code, out, stderr)
	}

	// Through NATS to a running daemon's correction service: a file with
	// an amendment target, another tenant's id and an unknown id.
	nc := testenv.Connect(t, env.nats.URL)
	js, _ := jetstream.New(nc)
	if _, _, code := env.run(t, "", "correct", "--tenant", "acme", "--void", "--reason", "r", "--daemon", "--timeout", "2s", "e2"); code != 2 {
		t.Fatalf("--daemon without a daemon: exit %d, want 2", code)
	}
	// Without --daemon, no daemon consuming means: apply from here.
	out, stderr, code = env.run(t, "", "correct", "--tenant", "acme", "--void", "--reason", "r", "--id", "e5")
	if code != 0 || !strings.Contains(out, "e5\tapplied") || !strings.Contains(stderr, "no daemon consumes") {
		t.Fatalf("fallback without a daemon: exit %d %q %q", code, out, stderr)
	}
	applier, _ := correct.NewApplier(correct.DefaultConfig(), env.st)
	svc, err := correct.NewService(correct.DefaultServiceConfig(), correct.ServiceDeps{JetStream: js, Applier: applier,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// Wait until the service pulls: then the CLI sees a daemon consuming.
	deadline := time.Now().Add(20 * time.Second)
	for {
		cons, err := js.Consumer(ctx, event.CorrectionsStream, correct.DefaultServiceConfig().Durable)
		if err == nil {
			if info, err := cons.Info(ctx); err == nil && info.NumWaiting > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the correction service does not pull")
		}
		time.Sleep(20 * time.Millisecond)
	}

	ids := filepath.Join(t.TempDir(), "ids.txt")
	if err := os.WriteFile(ids, []byte("# disputed\ne2\n\ng1\nnope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, code = env.run(t, "", "correct", "--tenant", "acme", "--quantity", "0.5", "--reason", "bug 12", "--file", ids)
	if code != 1 || !strings.Contains(out, "e2\tapplied") || !strings.Contains(out, "g1\trefused\tunknown_event") ||
		!strings.Contains(out, "nope\trefused\tunknown_event") || !strings.Contains(stderr, "1 applied, 0 duplicates, 2 refused") ||
		strings.Contains(stderr, "no daemon consumes") {
		t.Fatalf("file: exit %d %q %q", code, out, stderr)
	}
	out, _, code = env.run(t, "e3\ne4\n", "correct", "--tenant", "acme", "--void", "--reason", "r", "--file", "-", "--format", "json")
	if code != 0 || strings.Count(out, `"status":"applied"`) != 2 {
		t.Fatalf("stdin, json: exit %d %q", code, out)
	}
	// e1 and e3, e4 voided, e2 amended to half: 0.50 left; globex untouched.
	if c, g := env.cost(t, "acme"), env.cost(t, "globex"); c != "0.50" || g != "1.00" {
		t.Fatalf("cost: acme %s globex %s, want 0.50 and 1.00", c, g)
	}
}
