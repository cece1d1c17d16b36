package pgmeter_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector"
	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/meter"
	"github.com/tenantguard/tenantguard/collector/pgmeter"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// rig is a service with a metered pgx pool: real Postgres, real NATS with
// the usage stream, the emitter and a Meter.
type rig struct {
	js    jetstream.JetStream
	em    *emit.Emitter
	m     *meter.Meter
	dsn   string
	admin *pgx.Conn
}

func newRig(t *testing.T) *rig {
	t.Helper()
	ctx := context.Background()
	srv := testenv.NATS(t)
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r := &rig{}
	if r.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if err := collector.EnsureStreams(ctx, r.js, collector.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	if r.em, err = emit.New(nc, emit.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.em.Close(context.Background()) })
	mcfg := meter.DefaultConfig()
	mcfg.Service = "pg-test"
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	if r.m, err = meter.New(mcfg, meter.Deps{Emitter: r.em, Logger: log}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.m.Close(context.Background()) })
	_, r.dsn = testenv.Postgres(t)
	if r.admin, err = pgx.Connect(ctx, r.dsn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.admin.Close(context.Background()) })
	return r
}

// pool opens a pool as user (empty: the superuser) with the Tracer.
func (r *rig) pool(t *testing.T, user string, maxConns int32) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(r.dsn)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		cfg.ConnConfig.User = user
	}
	cfg.MaxConns = maxConns
	tcfg := pgmeter.DefaultConfig()
	tcfg.Database = "app"
	tr, err := pgmeter.New(r.m, tcfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = tr
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func (r *rig) exec(t *testing.T, sqls ...string) {
	t.Helper()
	for _, s := range sqls {
		if _, err := r.admin.Exec(context.Background(), s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// events returns the db_query events published so far, by tenant, with
// their raw bodies, after handing over everything queued.
func (r *rig) events(t *testing.T, want int) (map[string][]event.Event, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.em.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := r.js.OrderedConsumer(ctx, event.UsageStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"tenantguard.partitioned.*.*." + event.KindDBQuery}})
	if err != nil {
		t.Fatal(err)
	}
	by := map[string][]event.Event{}
	var raw []string
	for len(raw) < want {
		msgs, err := c.Fetch(want-len(raw), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for msg := range msgs.Messages() {
			n++
			var e event.Event
			if err := json.Unmarshal(msg.Data(), &e); err != nil {
				t.Fatal(err)
			}
			by[e.TenantID] = append(by[e.TenantID], e)
			raw = append(raw, string(msg.Data()))
		}
		if n == 0 {
			t.Fatalf("got %d db_query events, want %d", len(raw), want)
		}
	}
	return by, raw
}

func tenantCtx(tenant string) context.Context {
	return event.WithIdentity(context.Background(), event.Identity{Tenant: tenant, User: "u_" + tenant})
}

// TestQueriesAreMeteredPerTenant: every query run for a tenant is one
// db_query event of that tenant, with its operation, fingerprint, rows,
// latency and error; no SQL text or literal is in any event; a query
// without a tenant is not metered.
func TestQueriesAreMeteredPerTenant(t *testing.T) {
	r := newRig(t)
	r.exec(t, "CREATE TABLE invoices (id serial PRIMARY KEY, tenant_id text NOT NULL, amount numeric NOT NULL)")
	p := r.pool(t, "", 4)
	const sel = "SELECT id, amount FROM invoices WHERE tenant_id = $1"
	const ins = "INSERT INTO invoices (tenant_id, amount) VALUES ($1, $2)"
	const upd = "UPDATE invoices SET amount = amount + 1 WHERE tenant_id = $1"
	type q struct {
		tenant, sql string
		args        []any
	}
	run := []q{
		{"acme", ins, []any{"acme", "10.50"}},
		{"acme", ins, []any{"acme", "99.99"}},
		{"acme", sel, []any{"acme"}},
		{"acme", upd, []any{"acme"}},
		{"globex", ins, []any{"globex", "1"}},
		{"globex", sel, []any{"globex"}},
		{"globex", "SELEC broken", nil},
	}
	for _, x := range run {
		rows, err := p.Query(tenantCtx(x.tenant), x.sql, x.args...)
		if err == nil {
			for rows.Next() {
			}
			rows.Close()
			err = rows.Err()
		}
		if (err != nil) != strings.HasPrefix(x.sql, "SELEC ") {
			t.Fatalf("%s: %v", x.sql, err)
		}
	}
	// A query without a tenant in its context: not metered.
	if _, err := p.Exec(context.Background(), "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	// A batch: each query is an event.
	b := &pgx.Batch{}
	b.Queue(sel, "acme")
	b.Queue(ins, "acme", "5")
	if err := p.SendBatch(tenantCtx("acme"), b).Close(); err != nil {
		t.Fatal(err)
	}

	by, raw := r.events(t, len(run)+2)
	type got struct {
		op, fp, rows string
		err          bool
	}
	want := map[string][]got{
		"acme": {
			{"INSERT", fp(ins), "1", false}, {"INSERT", fp(ins), "1", false}, {"SELECT", fp(sel), "2", false},
			{"UPDATE", fp(upd), "2", false}, {"SELECT", fp(sel), "2", false}, {"INSERT", fp(ins), "1", false},
		},
		"globex": {{"INSERT", fp(ins), "1", false}, {"SELECT", fp(sel), "1", false}, {"OTHER", fp("SELEC broken"), "0", true}},
	}
	if len(by) != 2 {
		t.Fatalf("events for tenants %v, want acme and globex only", keys(by))
	}
	for tenant, w := range want {
		var g []got
		for _, e := range by[tenant] {
			g = append(g, got{e.Route, e.Attrs["fingerprint"], e.Attrs["rows"], e.Error})
			if e.UserID != "u_"+tenant || e.Service != "pg-test" || e.Kind != event.KindDBQuery {
				t.Errorf("event %+v: want user u_%s, service pg-test", e, tenant)
			}
			if e.LatencyMs <= 0 || e.LatencyMs > 10000 {
				t.Errorf("latency %.3f ms", e.LatencyMs)
			}
			if e.Attrs["db"] != "app" {
				t.Errorf("event %+v: want attrs.db app", e)
			}
		}
		if len(g) != len(w) {
			t.Fatalf("%s: %d events %+v, want %d", tenant, len(g), g, len(w))
		}
		for i := range w {
			if g[i] != w[i] {
				t.Errorf("%s event %d: got %+v, want %+v", tenant, i, g[i], w[i])
			}
		}
	}
	if e := by["globex"][2]; e.Attrs["sqlstate"] != "42601" {
		t.Errorf("failed query attrs %v, want sqlstate 42601 (syntax error)", e.Attrs)
	}
	for _, body := range raw {
		for _, secret := range []string{"invoices", "amount", "10.50", "99.99", "tenant_id =", "broken"} {
			if strings.Contains(body, secret) {
				t.Fatalf("event carries SQL text or a literal (%q): %s", secret, body)
			}
		}
	}
}

func fp(sql string) string {
	s := strconv.FormatUint(pgmeter.Fingerprint(sql), 16)
	return strings.Repeat("0", 16-len(s)) + s
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestInTenantEnforcesRLS: on a table with row-level security forced,
// queried as a role that neither owns it nor bypasses RLS, InTenant shows
// each tenant its own rows only, refuses a row of another tenant, and
// leaves nothing behind on the pooled connection.
func TestInTenantEnforcesRLS(t *testing.T) {
	r := newRig(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	role := "app_" + hex.EncodeToString(b[:])
	r.exec(t,
		"CREATE ROLE "+role+" LOGIN NOSUPERUSER NOBYPASSRLS",
		"CREATE TABLE docs (id serial PRIMARY KEY, tenant_id text NOT NULL, body text NOT NULL)",
		"ALTER TABLE docs ENABLE ROW LEVEL SECURITY",
		"ALTER TABLE docs FORCE ROW LEVEL SECURITY",
		"CREATE POLICY tenant_isolation ON docs USING (tenant_id = current_setting('app.current_tenant', true)) "+
			"WITH CHECK (tenant_id = current_setting('app.current_tenant', true))",
		"GRANT SELECT, INSERT ON docs TO "+role,
		"GRANT USAGE ON SEQUENCE docs_id_seq TO "+role,
	)
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = r.admin.Exec(ctx, "DROP TABLE IF EXISTS docs")
		_, _ = r.admin.Exec(ctx, "DROP ROLE IF EXISTS "+role)
	})
	p := r.pool(t, role, 1) // one connection: every transaction reuses it
	var owner bool
	if err := p.QueryRow(context.Background(),
		"SELECT pg_get_userbyid(relowner) = current_user OR rolbypassrls OR rolsuper FROM pg_class, pg_roles "+
			"WHERE relname = 'docs' AND rolname = current_user").Scan(&owner); err != nil {
		t.Fatal(err)
	}
	if owner {
		t.Fatal("the test role owns docs or bypasses RLS; the test would prove nothing")
	}
	insert := func(tenant, rowTenant, body string) error {
		ctx := tenantCtx(tenant)
		return pgmeter.InTenant(ctx, p, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO docs (tenant_id, body) VALUES ($1, $2)", rowTenant, body)
			return err
		})
	}
	for _, d := range [][2]string{{"acme", "a1"}, {"acme", "a2"}, {"globex", "g1"}} {
		if err := insert(d[0], d[0], d[1]); err != nil {
			t.Fatalf("insert %v: %v", d, err)
		}
	}
	if err := insert("acme", "globex", "forged"); err == nil || !strings.Contains(err.Error(), "row-level security") {
		t.Fatalf("acme inserting a globex row: %v, want the policy to refuse it", err)
	}
	read := func(ctx context.Context) []string {
		var out []string
		err := pgmeter.InTenant(ctx, p, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, "SELECT tenant_id || ':' || body FROM docs ORDER BY id")
			if err != nil {
				return err
			}
			out, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got := strings.Join(read(tenantCtx("acme")), ","); got != "acme:a1,acme:a2" {
		t.Fatalf("acme reads %q, want its two rows only", got)
	}
	if got := strings.Join(read(tenantCtx("globex")), ","); got != "globex:g1" {
		t.Fatalf("globex reads %q, want its row only", got)
	}
	if got := read(tenantCtx("initech")); len(got) != 0 {
		t.Fatalf("a tenant without rows reads %q", got)
	}
	// Outside InTenant, on the same pooled connection, no tenant is set.
	var setting *string
	if err := p.QueryRow(context.Background(), "SELECT NULLIF(current_setting('app.current_tenant', true), '')").Scan(&setting); err != nil {
		t.Fatal(err)
	}
	if setting != nil {
		t.Fatalf("app.current_tenant is %q after the transaction, want it unset", *setting)
	}
	var n int
	if err := p.QueryRow(context.Background(), "SELECT count(*) FROM docs").Scan(&n); err != nil || n != 0 {
		t.Fatalf("without a tenant: %d rows (%v), want 0", n, err)
	}
	if err := pgmeter.InTenant(context.Background(), p, func(pgx.Tx) error { return nil }); !errors.Is(err, pgmeter.ErrNoTenant) {
		t.Fatalf("InTenant without a tenant: %v, want ErrNoTenant", err)
	}
	// The helper's own statements are not metered; the service's are:
	// 4 inserts (one refused) and 3 reads.
	by, _ := r.events(t, 7)
	if got := len(by["acme"]) + len(by["globex"]) + len(by["initech"]); got != 7 {
		t.Fatalf("%d db_query events, want 7 (the statements fn ran)", got)
	}
}
