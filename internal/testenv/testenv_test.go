package testenv

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
)

func TestMain(m *testing.M) { Main(m) }

func TestNATSRestartKeepsStreams(t *testing.T) {
	n := NATS(t)
	nc, err := nats.Connect(n.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := nc.JetStream()
	if _, err := js.AddStream(&nats.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish("s.a", []byte("x")); err != nil {
		t.Fatal(err)
	}
	n.Restart(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := js.StreamInfo("S")
		if err == nil {
			if got := info.State.Msgs; got != 1 {
				t.Fatalf("got %d messages after restart, want 1", got)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream info after restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestClickHouseDatabaseAndRestart(t *testing.T) {
	srv := NewClickHouseServer(t)
	db := srv.NewDatabase(t)
	conn := srv.Conn(t, db)
	ctx := context.Background()
	if err := conn.Exec(ctx, "CREATE TABLE x (a UInt8) ENGINE = MergeTree ORDER BY a"); err != nil {
		t.Fatal(err)
	}
	// 18.16 hangs on an INSERT with inline VALUES over Exec: use a batch.
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO x (a)")
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.Append(uint8(1)); err != nil {
		t.Fatal(err)
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("ping succeeded while the server is stopped")
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	var n uint64
	if err := srv.Conn(t, db).QueryRow(ctx, "SELECT count() FROM x").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("got %d rows after restart, want 1", n)
	}
}

func TestPostgresHasPgStatStatements(t *testing.T) {
	_, dsn := Postgres(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements'").Scan(&v); err != nil {
		t.Fatalf("pg_stat_statements: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_statements").Scan(&n); err != nil {
		t.Fatalf("query pg_stat_statements: %v", err)
	}
}

func TestPrometheusAndAlertmanager(t *testing.T) {
	am := StartAlertmanager(t)
	p := StartPrometheus(t, PrometheusConfig{Targets: []string{"127.0.0.1:1"}})
	for _, u := range []string{am.URL + "/api/v2/status", p.URL + "/api/v1/status/buildinfo"} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: got %d, want 200", u, resp.StatusCode)
		}
	}
}

// TestClickHouseKeepsItsDirectorySmall: the generated config deletes
// merged-away parts after 30 s (not 8 minutes) and keeps no system log
// tables, which is what bounds `tenantguard dev`'s data directory.
func TestClickHouseKeepsItsDirectorySmall(t *testing.T) {
	srv, db := ClickHouse(t)
	conn := srv.Conn(t, db)
	ctx := context.Background()
	var lifetime string
	if err := conn.QueryRow(ctx, "SELECT value FROM system.merge_tree_settings WHERE name = 'old_parts_lifetime'").Scan(&lifetime); err != nil {
		t.Fatal(err)
	}
	if lifetime != "30" {
		t.Errorf("got old_parts_lifetime %s, want 30", lifetime)
	}
	var logs uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = 'system' AND name LIKE '%\\_log'").Scan(&logs); err != nil {
		t.Fatal(err)
	}
	if logs != 0 {
		t.Errorf("got %d system log tables, want none", logs)
	}
}
