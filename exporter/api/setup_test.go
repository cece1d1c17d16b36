package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/anomaly/advisor"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/exporter/billing"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var (
	t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	t1 = time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
)

// Plain tokens of the test; the config holds only their hashes.
var tokens = map[string]string{
	"admin":   "tok-admin-7f3a",
	"billing": "tok-billing-91c2",
	"acme":    "tok-acme-0b5e",
	"globex":  "tok-globex-44d1",
}

func hash(tok string) string {
	s := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(s[:])
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.Tokens = []Token{
		{Name: "ops", SHA256: hash(tokens["admin"]), Role: "admin"},
		{Name: "finance", SHA256: hash(tokens["billing"]), Role: "billing"},
		{Name: "acme-admin", SHA256: hash(tokens["acme"]), Role: "tenant:acme"},
		{Name: "globex-admin", SHA256: hash(tokens["globex"]), Role: "tenant:globex"},
	}
	return cfg
}

type fixture struct {
	st  *store.Store
	srv *Server
	url string
}

// start runs a Server on a free port against st, stopped at the end of t.
func start(t testing.TB, st *store.Store, cfg Config) *fixture {
	t.Helper()
	exp, err := billing.New(billing.DefaultConfig(), st)
	if err != nil {
		t.Fatal(err)
	}
	adv, err := advisor.New(advisor.DefaultConfig(), advisor.Deps{Source: st})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Deps{DB: st, Exporter: exp, Advisor: adv, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	testenv.RunStage(t, "api", srv.Run)
	return &fixture{st: st, srv: srv, url: "http://" + srv.Addr()}
}

// seed writes events (through the store, so usage_1m fills through its
// materialized view), anomalies, decisions and pg findings for two tenants.
func seed(t testing.TB, st *store.Store) {
	t.Helper()
	ctx := context.Background()
	var rows []store.Row
	for i := 0; i < 240; i++ {
		for _, tenant := range []string{"acme", "globex"} {
			e := &event.Event{ID: fmt.Sprintf("%s-%d", tenant, i), TenantID: tenant, Kind: "ai_tokens",
				Time: t0.Add(time.Duration(i) * 30 * time.Second), Quantity: 1000, LatencyMs: float64(10 + i%50),
				StatusCode: 200, Error: i%10 == 0, Route: "POST /v1/chat-" + tenant}
			unit := decimal.RequireFromString("0.000123456")
			rows = append(rows, store.Row{Event: e, Plan: "pro", UnitPrice: unit, Cost: unit.Mul(decimal.NewFromInt(1000)), PriceVersion: "v1"})
		}
	}
	if err := st.InsertEvents(ctx, rows, time.Now()); err != nil {
		t.Fatal(err)
	}
	exec := func(table, cols string, data [][]any) {
		b, err := st.Conn().PrepareBatch(ctx, "INSERT INTO "+st.Table(table)+" ("+cols+")")
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range data {
			if err := b.Append(r...); err != nil {
				b.Abort()
				t.Fatal(err)
			}
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	var an, dec [][]any
	for _, tenant := range []string{"acme", "globex"} {
		an = append(an,
			[]any{"fp-" + tenant + "-1", tenant, "events_rate", "ai_tokens", "firing", "critical", 900.0, 100.0, 9.0,
				t0.Add(time.Hour), time.Unix(0, 0), "spike of " + tenant, t0.Add(time.Hour)},
			[]any{"fp-" + tenant + "-2", tenant, "cost", "", "resolved", "warning", 50.0, 10.0, 5.0,
				t0.Add(2 * time.Hour), t0.Add(3 * time.Hour), "cost of " + tenant, t0.Add(3 * time.Hour)})
		n := map[string]int{"acme": 25, "globex": 3}[tenant]
		for i := 0; i < n; i++ {
			dec = append(dec, []any{tenant, "all", "throttle", 10.0, uint32(20), t0.Add(time.Duration(i) * time.Minute),
				t0.Add(time.Duration(i)*time.Minute + 10*time.Minute), "noisy " + tenant, "anomaly", "fp-" + tenant + "-1", t0})
		}
	}
	exec("anomalies", "fingerprint, tenant_id, metric, kind, status, severity, observed, baseline, ratio, starts_at, ends_at, summary, updated_at", an)
	exec("decisions", "tenant_id, scope, action, rate_per_sec, burst, issued_at, expires_at, reason, source, anomaly_id, recorded_at", dec)
	exec("pg_findings", "database, queryid, userid, role, query, tables, class, calls, total_exec_time_ms, first_seen, last_seen, observed_at",
		[][]any{
			{"app", int64(-9123372036854775807), uint32(10), "app_rw", "SELECT * FROM invoices", []string{"invoices"}, "unscoped", uint64(40), 1234.5, t0, t0.Add(time.Hour), t0.Add(time.Hour)},
			{"app", int64(42), uint32(10), "app_rw", "SELECT * FROM orders WHERE tenant_id = $1", []string{"orders"}, "multi_tenant", uint64(4), 12.5, t0, t0.Add(time.Hour), t0.Add(time.Hour)},
		})
}

type resp struct {
	status int
	body   []byte
	header http.Header
}

func get(t testing.TB, url, auth string) resp {
	t.Helper()
	status, header, body := testenv.HTTPGet(t, url, auth)
	return resp{status: status, body: body, header: header}
}

func bearer(role string) string { return "Bearer " + tokens[role] }

// errorMessage returns the JSON error of a non-2xx response, failing on
// anything else.
func errorMessage(t testing.TB, r resp) string {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == "" {
		t.Fatalf("status %d body %q is not a JSON error", r.status, r.body)
	}
	return e.Error
}

type eventT = event.Event

func itoa(i int) string { return fmt.Sprint(i) }
