package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// openTest returns a migrated store on a fresh database of the shared server.
func openTest(t *testing.T) *Store {
	t.Helper()
	srv, db := testenv.ClickHouse(t)
	cfg := DefaultConfig()
	cfg.Addr, cfg.Database = []string{srv.Addr}, db
	st, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(context.Background()); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return st
}

func row(tenant, id string, at time.Time, cost string) Row {
	return Row{
		Event: &event.Event{ID: id, TenantID: tenant, Kind: "api_request", Time: at, Quantity: 1,
			LatencyMs: 20, StatusCode: 200, Attrs: map[string]string{"model": "m"}},
		Plan: "pro", UnitPrice: decimal.RequireFromString(cost), Cost: decimal.RequireFromString(cost), PriceVersion: "v1",
	}
}

func TestMigrateIsIdempotent(t *testing.T) {
	st := openTest(t)
	got, err := st.Migrate(context.Background())
	if err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if len(got) != len(Migrations) {
		t.Fatalf("got %d migrations, want %d", len(got), len(Migrations))
	}
	var n uint64
	if err := st.Conn().QueryRow(context.Background(), "SELECT count() FROM "+st.Table("schema_migrations")).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != uint64(len(Migrations)) {
		t.Fatalf("ledger has %d rows after two runs, want %d", n, len(Migrations))
	}
}

func TestInsertRollupAndExistingIDs(t *testing.T) {
	st := openTest(t)
	ctx := context.Background()
	at := time.Now().UTC().Truncate(time.Minute).Add(-2 * time.Minute).Add(123 * time.Millisecond)
	var rows []Row
	for i := 0; i < 10; i++ {
		rows = append(rows, row("acme", fmt.Sprintf("e%d", i), at, "0.000000001"))
	}
	rows = append(rows, row("globex", "e0", at, "1.5"))
	if err := st.InsertEvents(ctx, rows, time.Now()); err != nil {
		t.Fatal(err)
	}
	var count uint64
	var cost decimal.Decimal
	var p95 []float32
	err := st.Conn().QueryRow(ctx, "SELECT sum(count), sum(cost), quantilesTDigestMerge(0.5, 0.95, 0.99)(latency) FROM "+
		st.Table("usage_1m")+" WHERE tenant_id = ?", "acme").Scan(&count, &cost, &p95)
	if err != nil {
		t.Fatal(err)
	}
	if count != 10 || !cost.Equal(decimal.RequireFromString("0.00000001")) {
		t.Fatalf("usage_1m got count %d cost %s, want 10 and 0.00000001", count, cost)
	}
	if len(p95) != 3 || p95[1] != 20 {
		t.Fatalf("usage_1m latency quantiles %v, want p95 20", p95)
	}
	var ms uint16
	if err := st.Conn().QueryRow(ctx, "SELECT time_ms FROM "+st.Table("events")+" WHERE id = 'e1'").Scan(&ms); err != nil {
		t.Fatal(err)
	}
	if ms != 123 {
		t.Fatalf("time_ms %d, want 123", ms)
	}
	found, err := st.ExistingIDs(ctx, []EventKey{
		{TenantID: "acme", Kind: "api_request", ID: "e3", Time: at},
		{TenantID: "acme", Kind: "api_request", ID: "missing", Time: at},
		{TenantID: "globex", Kind: "api_request", ID: "e0", Time: at},
		{TenantID: "globex", Kind: "api_request", ID: "e1", Time: at},
		// Another event second or kind is another event...
		{TenantID: "acme", Kind: "api_request", ID: "e4", Time: at.Add(time.Second)},
		{TenantID: "acme", Kind: "db_query", ID: "e5", Time: at},
		// ...unless the key asks for any copy in a time range.
		{TenantID: "acme", Kind: "api_request", ID: "e6", Time: at.Add(time.Hour), From: at.Add(-time.Hour), To: at.Add(2 * time.Hour)},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"acme\x00e3": true, "globex\x00e0": true, "acme\x00e6": true}
	if len(found) != len(want) {
		t.Fatalf("got %v, want %v", found, want)
	}
	for k := range want {
		if _, ok := found[k]; !ok {
			t.Fatalf("missing %q in %v", k, found)
		}
	}
}

func TestRetentionAndTenantDelete(t *testing.T) {
	st := openTest(t)
	ctx := context.Background()
	now := time.Now().UTC()
	old := now.AddDate(0, 0, -10)
	if err := st.InsertEvents(ctx, []Row{row("a", "1", old, "1"), row("a", "2", now, "1"), row("b", "3", now, "1")}, now); err != nil {
		t.Fatal(err)
	}
	dropped, err := st.DropPartitionsBefore(ctx, now.AddDate(0, 0, -7))
	if err != nil {
		t.Fatal(err)
	}
	if len(dropped) != 1 || dropped[0] != old.Format("20060102") {
		t.Fatalf("dropped %v, want [%s]", dropped, old.Format("20060102"))
	}
	if err := st.DeleteTenant(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteTenant(ctx, "a' OR 1=1 --"); err == nil {
		t.Fatal("DeleteTenant accepted an injection string")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var n uint64
		if err := st.Conn().QueryRow(ctx, "SELECT count() FROM "+st.Table("events")).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("events has %d rows after retention and delete, want 1", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestConfigValidateNamesFields(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Database = "x; DROP"
	cfg.Addr = nil
	cfg.MaxOpenConns = 0
	err := cfg.Validate()
	for _, want := range []string{"clickhouse.database", "clickhouse.addr", "clickhouse.max_open_conns"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("error %v does not name %s", err, want)
		}
	}
}

// TestMigrateResumesHalfAppliedColumns: a migration that added some of its
// columns and died runs again without "column already exists".
func TestMigrateResumesHalfAppliedColumns(t *testing.T) {
	srv, db := testenv.ClickHouse(t)
	cfg := DefaultConfig()
	cfg.Addr, cfg.Database = []string{srv.Addr}, db
	st, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	if err := st.Conn().Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db); err != nil {
		t.Fatal(err)
	}
	for _, m := range Migrations {
		if m.Name == "decisions" {
			for _, stmt := range m.Statements {
				if err := st.Conn().Exec(ctx, strings.ReplaceAll(stmt, "{db}", db)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if err := st.Conn().Exec(ctx, "ALTER TABLE "+db+".decisions ADD COLUMN kv_key String"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatalf("migrate over a half-applied step: %v", err)
	}
	for _, col := range []string{"kv_key", "kv_revision", "kv_op", "verified", "key_id", "reject_reason", "raw", "tenant_id", "expires_at"} {
		has, err := st.hasColumn(ctx, st.Conn(), "decisions", col)
		if err != nil || !has {
			t.Errorf("decisions.%s: has %v, %v; want the column", col, has, err)
		}
	}
}
