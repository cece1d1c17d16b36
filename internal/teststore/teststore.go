// Package teststore opens a migrated ClickHouse store for a test, on a
// database of its own in testenv's shared server (or, with Sharded, in
// its shared two-shard cluster): the one way tests get a store. (It is not part of testenv because collector/store's own tests
// use testenv.)
package teststore

import (
	"context"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

// New opens a migrated store on a database of its own in the shared
// ClickHouse, closed at the end of t.
func New(t testing.TB) *store.Store {
	t.Helper()
	srv, db := testenv.ClickHouse(t)
	return On(t, srv, db)
}

// On opens a migrated store on database db of srv, closed at the end of t.
func On(t testing.TB, srv *testenv.ClickHouseServer, db string) *store.Store {
	t.Helper()
	cfg := store.DefaultConfig()
	cfg.Addr, cfg.Database, cfg.ReadTimeout = []string{srv.Addr}, db, 30*time.Second
	return open(t, cfg)
}

// Sharded opens a migrated store on a database of its own in the shared
// two-shard cluster, closed at the end of t: every contract table is a
// Distributed table over both shards.
func Sharded(t testing.TB) (*store.Store, *testenv.ClickHouseCluster) {
	t.Helper()
	c, db := testenv.ClickHouseShards(t)
	return OnCluster(t, c, db), c
}

// OnCluster opens a migrated store on database db of cluster c, its pool
// on the first shard, closed at the end of t.
func OnCluster(t testing.TB, c *testenv.ClickHouseCluster, db string) *store.Store {
	t.Helper()
	return open(t, ClusterConfig(c, db))
}

// open opens and migrates a store with cfg, closed at the end of t.
func open(t testing.TB, cfg store.Config) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return st
}

// ClusterConfig is the store config for database db of cluster c.
func ClusterConfig(c *testenv.ClickHouseCluster, db string) store.Config {
	cfg := store.DefaultConfig()
	cfg.Addr, cfg.Database, cfg.ReadTimeout = c.Addrs()[:1], db, 30*time.Second
	cfg.Cluster, cfg.Shards = c.Name, c.Addrs()
	return cfg
}

// Hourly adds counts to usage_1h, each to the hour it falls in, as the
// views of usage_1h do for the events behind them: for tests that store
// usage_1m rows directly and warm-start from them.
func Hourly(t testing.TB, st *store.Store, counts []store.HourlyCount) {
	t.Helper()
	if len(counts) == 0 {
		return
	}
	type key struct {
		tenant string
		hour   int64
	}
	sums := map[key]uint64{}
	for _, c := range counts {
		sums[key{c.TenantID, c.Hour.Unix() / 3600 * 3600}] += c.Count
	}
	ctx := context.Background()
	b, err := st.Conn().PrepareBatch(ctx, "INSERT INTO "+st.Table("usage_1h")+" (tenant_id, hour, count)")
	if err != nil {
		t.Fatal(err)
	}
	for k, n := range sums {
		if err := b.Append(k.tenant, time.Unix(k.hour, 0).UTC(), n); err != nil {
			b.Abort()
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
}
