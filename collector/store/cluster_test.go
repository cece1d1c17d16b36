package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

// openCluster returns a migrated store on a fresh database of the shared
// two-shard cluster, and the cluster.
func openCluster(t *testing.T) (*Store, *testenv.ClickHouseCluster) {
	t.Helper()
	c, db := testenv.ClickHouseShards(t)
	st := openClusterDB(t, c, db)
	if _, err := st.Migrate(context.Background()); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return st, c
}

func openClusterDB(t *testing.T, c *testenv.ClickHouseCluster, db string) *Store {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr, cfg.Database, cfg.Cluster, cfg.Shards = c.Addrs()[:1], db, c.Name, c.Addrs()
	st, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// shardConnsOf opens a connection to each shard.
func shardConnsOf(t *testing.T, c *testenv.ClickHouseCluster) []driver.Conn {
	t.Helper()
	out := make([]driver.Conn, len(c.Shards))
	for i, s := range c.Shards {
		out[i] = s.Conn(t, "default")
	}
	return out
}

func TestClusterConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster string
		shards  []string
		want    string // "" for valid
	}{
		{"single node", "", nil, ""},
		{"cluster", "tg", []string{"ch1:9000", "ch2:9000"}, ""},
		{"shards without cluster", "", []string{"ch1:9000"}, "clickhouse.shards: set only with clickhouse.cluster"},
		{"cluster without shards", "tg", nil, "clickhouse.shards: must list"},
		{"bad cluster name", "tg;DROP", []string{"ch1:9000"}, "clickhouse.cluster:"},
		{"bad shard", "tg", []string{"ch1"}, `clickhouse.shards: "ch1" must be host:port`},
		{"shard port 0", "tg", []string{"ch1:0"}, `clickhouse.shards: "ch1:0" must be host:port`},
		{"shard twice", "tg", []string{"ch1:9000", "ch1:9000"}, `clickhouse.shards: "ch1:9000" is listed twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Cluster, cfg.Shards = tc.cluster, tc.shards
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want valid", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// TestClusterMigrateCreatesBothLayers checks that every shard holds each
// table's local layer, with a single node's engine, and under the contract
// name a Distributed table with the same columns; the views read and write
// the local tables; each shard keeps its own ledger; and a second run
// changes nothing.
func TestClusterMigrateCreatesBothLayers(t *testing.T) {
	st, c := openCluster(t)
	ctx := context.Background()
	got, err := st.Migrate(ctx)
	if err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if len(got) != len(Migrations) {
		t.Fatalf("got %d migrations, want %d", len(got), len(Migrations))
	}
	wantLocal := map[string]string{
		"events": "MergeTree", "usage_1m": "SummingMergeTree", "anomalies": "ReplacingMergeTree",
		"decisions": "MergeTree", "pg_findings": "ReplacingMergeTree", "corrections": "MergeTree",
		"billing_exports": "MergeTree", "usage_1h": "SummingMergeTree",
	}
	for i, conn := range shardConnsOf(t, c) {
		engines := map[string]string{}
		rows, err := conn.Query(ctx, "SELECT name, engine, engine_full FROM system.tables WHERE database = ?", st.Database())
		if err != nil {
			t.Fatal(err)
		}
		full := map[string]string{}
		for rows.Next() {
			var name, engine, ef string
			if err := rows.Scan(&name, &engine, &ef); err != nil {
				t.Fatal(err)
			}
			engines[name], full[name] = engine, ef
		}
		rows.Close()
		for table, engine := range wantLocal {
			if got := engines[table+LocalSuffix]; got != engine {
				t.Errorf("shard %d: %s_local engine: got %q, want %q", i+1, table, got, engine)
			}
			if got := engines[table]; got != "Distributed" {
				t.Errorf("shard %d: %s engine: got %q, want Distributed", i+1, table, got)
			}
			if !strings.Contains(full[table], ShardingKeys()[table]) || !strings.Contains(full[table], table+LocalSuffix) {
				t.Errorf("shard %d: %s: got %q, want Distributed over %s_local by %s", i+1, table, full[table], table, ShardingKeys()[table])
			}
			if local, dist := columnsOf(t, conn, st.Database(), table+LocalSuffix), columnsOf(t, conn, st.Database(), table); local != dist {
				t.Errorf("shard %d: %s columns: got %s, want those of %s_local: %s", i+1, table, dist, table, local)
			}
		}
		for _, mv := range []string{"usage_1m_mv", "usage_1m_corrections_mv", "usage_1h_mv", "usage_1h_corrections_mv"} {
			if engines[mv] != "MaterializedView" {
				t.Errorf("shard %d: %s: got engine %q, want MaterializedView", i+1, mv, engines[mv])
			}
		}
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+st.Table("schema_migrations")).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != uint64(len(Migrations)) {
			t.Errorf("shard %d: ledger has %d rows after two runs, want %d", i+1, n, len(Migrations))
		}
		var deps uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name LIKE '%mv' AND create_table_query LIKE '%_local%'",
			st.Database()).Scan(&deps); err != nil {
			t.Fatal(err)
		}
		if deps != 4 {
			t.Errorf("shard %d: got %d views over local tables, want 4", i+1, deps)
		}
	}
}

func columnsOf(t *testing.T, conn driver.Conn, db, table string) string {
	t.Helper()
	rows, err := conn.Query(context.Background(), "SELECT name, type FROM system.columns WHERE database = ? AND table = ? ORDER BY name", db, table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %s, ", name, typ)
	}
	return b.String()
}

func TestClusterMigrateRefusesAMismatchedLayout(t *testing.T) {
	ctx := context.Background()
	c, db := testenv.ClickHouseShards(t)
	t.Run("fewer shards than the cluster", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Addr, cfg.Database, cfg.Cluster, cfg.Shards = c.Addrs()[:1], db, c.Name, c.Addrs()[:1]
		st, err := Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if _, err := st.Migrate(ctx); err == nil || !strings.Contains(err.Error(), "has 2 shards in remote_servers, clickhouse.shards lists 1") {
			t.Fatalf("got %v, want the shard count named", err)
		}
	})
	t.Run("unknown cluster", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Addr, cfg.Database, cfg.Cluster, cfg.Shards = c.Addrs()[:1], db, "nosuch", c.Addrs()
		st, err := Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if _, err := st.Migrate(ctx); err == nil || !strings.Contains(err.Error(), "cluster nosuch has 0 shards") {
			t.Fatalf("got %v, want the cluster named", err)
		}
	})
	t.Run("single-node database", func(t *testing.T) {
		// A database migrated for one node, on the first shard, then
		// opened as a cluster.
		cfg := DefaultConfig()
		cfg.Addr, cfg.Database = c.Addrs()[:1], db
		single, err := Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer single.Close()
		if _, err := single.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		st := openClusterDB(t, c, db)
		if _, err := st.Migrate(ctx); err == nil || !strings.Contains(err.Error(), "events is MergeTree, not Distributed") {
			t.Fatalf("got %v, want the single-node layout named", err)
		}
	})
}

// TestClusterRowsLiveWithTheirTenant inserts through the Distributed
// table and checks each tenant's events and rollups on one shard, both
// shards used, the totals read back through Distributed, and the
// redelivery check (an external table in IN) finding keys on both shards.
func TestClusterRowsLiveWithTheirTenant(t *testing.T) {
	st, c := openCluster(t)
	ctx := context.Background()
	at := time.Now().UTC().Truncate(time.Minute).Add(-2 * time.Minute)
	var rows []Row
	var keys []EventKey
	for ti := 0; ti < 12; ti++ {
		tenant := fmt.Sprintf("tenant-%02d", ti)
		for i := 0; i < 5; i++ {
			rows = append(rows, row(tenant, fmt.Sprintf("e%d", i), at, "0.25"))
		}
		keys = append(keys, EventKey{TenantID: tenant, Kind: "api_request", ID: "e1", Time: at},
			EventKey{TenantID: tenant, Kind: "api_request", ID: "missing", Time: at})
	}
	if err := st.InsertEvents(ctx, rows, time.Now()); err != nil {
		t.Fatal(err)
	}
	var total uint64
	for i, conn := range shardConnsOf(t, c) {
		var n, tenants uint64
		if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(tenant_id) FROM "+st.Table("events_local")).Scan(&n, &tenants); err != nil {
			t.Fatal(err)
		}
		if n == 0 || n != tenants*5 {
			t.Errorf("shard %d: got %d events of %d tenants, want 5 per tenant and some", i+1, n, tenants)
		}
		var usage uint64
		if err := conn.QueryRow(ctx, "SELECT sum(count) FROM "+st.Table("usage_1m_local")).Scan(&usage); err != nil {
			t.Fatal(err)
		}
		if usage != n {
			t.Errorf("shard %d: usage_1m_local counts %d, want its %d events", i+1, usage, n)
		}
		total += n
	}
	if total != uint64(len(rows)) {
		t.Errorf("shards hold %d events, want %d", total, len(rows))
	}
	owner := map[string]int{}
	for i, conn := range shardConnsOf(t, c) {
		r, err := conn.Query(ctx, "SELECT DISTINCT tenant_id FROM "+st.Table("events_local"))
		if err != nil {
			t.Fatal(err)
		}
		for r.Next() {
			var tenant string
			if err := r.Scan(&tenant); err != nil {
				t.Fatal(err)
			}
			if prev, ok := owner[tenant]; ok {
				t.Errorf("%s on shards %d and %d, want one", tenant, prev+1, i+1)
			}
			owner[tenant] = i
		}
		r.Close()
	}
	if len(owner) != 12 {
		t.Errorf("got %d tenants on the shards, want 12", len(owner))
	}
	var viaDist uint64
	if err := st.Conn().QueryRow(ctx, "SELECT sum(count) FROM "+st.Table("usage_1m")).Scan(&viaDist); err != nil {
		t.Fatal(err)
	}
	if viaDist != uint64(len(rows)) {
		t.Errorf("usage_1m through Distributed counts %d, want %d", viaDist, len(rows))
	}
	found, err := st.ExistingIDs(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 12 {
		t.Errorf("got %d stored keys, want 12 (e1 of each tenant)", len(found))
	}
	for ti := 0; ti < 12; ti++ {
		if _, ok := found[fmt.Sprintf("tenant-%02d", ti)+"\x00e1"]; !ok {
			t.Errorf("tenant-%02d e1 not found", ti)
		}
	}
	wide := []EventKey{{TenantID: "tenant-03", ID: "e2", From: at.Add(-time.Hour), To: at.Add(time.Hour)},
		{TenantID: "tenant-08", ID: "e4", From: at.Add(-time.Hour), To: at.Add(time.Hour)}}
	if found, err := st.ExistingIDs(ctx, wide); err != nil || len(found) != 2 {
		t.Errorf("wide check: got %v, %v; want both keys", found, err)
	}
}

// TestClusterFinalAndRetention checks FINAL on the Distributed anomalies
// table keeps one row per episode across shards, and that retention and
// tenant deletion reach the local tables of both shards.
func TestClusterFinalAndRetention(t *testing.T) {
	st, c := openCluster(t)
	ctx := context.Background()
	start := time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	var anomalies []AnomalyRow
	for ti := 0; ti < 8; ti++ {
		for v := 0; v < 3; v++ {
			anomalies = append(anomalies, AnomalyRow{Fingerprint: "fp", TenantID: fmt.Sprintf("t%d", ti), Metric: "rate",
				Status: "firing", Ratio: float64(v), StartsAt: start, EndsAt: time.Unix(0, 0).UTC(), UpdatedAt: start.Add(time.Duration(v) * time.Second)})
		}
	}
	for i := 0; i < len(anomalies); i += 8 { // one insert per version
		if err := st.InsertAnomalies(ctx, anomalies[i:i+8]); err != nil {
			t.Fatal(err)
		}
	}
	firing, err := st.FiringAnomalies(ctx, "rate")
	if err != nil {
		t.Fatal(err)
	}
	if len(firing) != 8 {
		t.Fatalf("got %d firing episodes, want 8", len(firing))
	}

	old := time.Now().UTC().AddDate(0, 0, -3)
	var rows []Row
	for ti := 0; ti < 8; ti++ {
		rows = append(rows, row(fmt.Sprintf("t%d", ti), "old", old, "1"), row(fmt.Sprintf("t%d", ti), "new", time.Now().UTC(), "1"))
	}
	if err := st.InsertEvents(ctx, rows, time.Now()); err != nil {
		t.Fatal(err)
	}
	conns := shardConnsOf(t, c)
	for i, conn := range conns {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+st.Table("events_local")+" WHERE id = 'old'").Scan(&n); err != nil || n == 0 {
			t.Fatalf("shard %d: got %d old events (%v), want some before retention", i+1, n, err)
		}
	}
	dropped, err := st.DropPartitionsBefore(ctx, time.Now().UTC().AddDate(0, 0, -1))
	if err != nil {
		t.Fatal(err)
	}
	if want := old.Format("20060102"); len(dropped) != 1 || dropped[0] != want {
		t.Errorf("dropped %v, want [%s]", dropped, want)
	}
	for i, conn := range conns {
		var oldN, newN uint64
		if err := conn.QueryRow(ctx, "SELECT countIf(id = 'old'), countIf(id = 'new') FROM "+st.Table("events_local")).Scan(&oldN, &newN); err != nil {
			t.Fatal(err)
		}
		if oldN != 0 || newN == 0 {
			t.Errorf("shard %d: got %d old and %d new events after retention, want 0 and some", i+1, oldN, newN)
		}
	}

	if err := st.DeleteTenant(ctx, "t3"); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := st.WaitMutations(wctx, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"events", "usage_1m", "usage_1h", "anomalies"} {
		var n uint64
		if err := st.Conn().QueryRow(ctx, "SELECT count() FROM "+st.Table(table)+" WHERE tenant_id = 't3'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s: got %d rows of a deleted tenant, want 0", table, n)
		}
	}
}
