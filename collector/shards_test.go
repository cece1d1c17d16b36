package collector

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// newShardedRig is newRig over a two-shard cluster: the store's pool on
// the first shard, every table Distributed over both.
func newShardedRig(t *testing.T, c *testenv.ClickHouseCluster, db string) *rig {
	t.Helper()
	r := &rig{nats: testenv.NATS(t), db: db, addr: c.Addrs()[0]}
	var err error
	r.nc, err = nats.Connect(r.nats.URL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.nc.Close)
	if r.js, err = jetstream.New(r.nc); err != nil {
		t.Fatal(err)
	}
	r.store = teststore.OnCluster(t, c, db)
	pc := pricing.DefaultConfig()
	pc.Prices = map[string]string{"api_request": "0.0001"}
	if r.book, err = pricing.New(pc, nil); err != nil {
		t.Fatal(err)
	}
	if err := EnsureStreams(context.Background(), r.js, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	return r
}

// shardCounts returns, per shard, its events_local rows, their unique
// (tenant, id) pairs and its tenants, and fails t if a tenant has rows on
// two shards.
func shardCounts(t *testing.T, r *rig, c *testenv.ClickHouseCluster) (rows, unique []uint64) {
	t.Helper()
	ctx := context.Background()
	owner := map[string]int{}
	for i, s := range c.Shards {
		conn := s.Conn(t, "default")
		var n, u uint64
		if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(tenant_id, id) FROM "+r.store.Table("events_local")).Scan(&n, &u); err != nil {
			t.Fatal(err)
		}
		rows, unique = append(rows, n), append(unique, u)
		tr, err := conn.Query(ctx, "SELECT DISTINCT tenant_id FROM "+r.store.Table("events_local"))
		if err != nil {
			t.Fatal(err)
		}
		for tr.Next() {
			var tenant string
			if err := tr.Scan(&tenant); err != nil {
				t.Fatal(err)
			}
			if prev, ok := owner[tenant]; ok {
				t.Errorf("tenant %s has events on shards %d and %d, want one", tenant, prev+1, i+1)
			}
			owner[tenant] = i
		}
		tr.Close()
	}
	return rows, unique
}

// checkShards checks that both shards hold events, each exactly once, and
// that they add up to want.
func checkShards(t *testing.T, r *rig, c *testenv.ClickHouseCluster, want uint64) {
	t.Helper()
	rows, unique := shardCounts(t, r, c)
	var total uint64
	for i := range rows {
		if rows[i] == 0 || rows[i] != unique[i] {
			t.Errorf("shard %d: got %d rows (%d unique), want some, each once", i+1, rows[i], unique[i])
		}
		total += rows[i]
	}
	if total != want {
		t.Errorf("shards hold %d events together, want %d", total, want)
	}
}

// TestShardedIngestStoresOnce ingests through the collector into two
// shards: every event once in total and on its shard, each tenant on one
// shard, and a re-publish after JetStream's duplicate window, which only
// the dedup horizon's lookup (its keys an external table, read through
// the Distributed table on both shards) can catch, stored once.
func TestShardedIngestStoresOnce(t *testing.T) {
	c, db := testenv.ClickHouseShards(t)
	r := newShardedRig(t, c, db)
	cfg := testConfig()
	cfg.Stream.DuplicateWindow = 500 * time.Millisecond
	_, reg := r.startWithRegistry(t, cfg)
	now := time.Now().UTC()
	msgs := make([]*nats.Msg, 10000)
	for i := range msgs {
		e := event.Event{ID: fmt.Sprintf("s-%d", i), TenantID: fmt.Sprintf("t%d", i%40), Kind: event.KindAPIRequest,
			Time: now.Add(-time.Duration(i) * time.Millisecond), Quantity: 1}
		msgs[i] = nats.NewMsg(event.Subject(e.TenantID, e.Kind))
		msgs[i].Data = event.AppendJSON(nil, &e)
		msgs[i].Header.Set(event.HeaderMsgID, e.ID)
	}
	send := func(msgs []*nats.Msg) {
		t.Helper()
		for _, m := range msgs {
			if _, err := r.js.PublishMsg(context.Background(), m); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(msgs)
	waitRows(t, r.store, 10000, 60*time.Second)
	time.Sleep(time.Second) // past the duplicate window
	send(msgs[:2000])
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && testenv.MetricValue(t, reg, "tenantguard_collector_duplicates_total", "reason", "republish") < 2000 {
		time.Sleep(100 * time.Millisecond)
	}
	if got := testenv.MetricValue(t, reg, "tenantguard_collector_duplicates_total", "reason", "republish"); got != 2000 {
		t.Errorf("duplicates_total{reason=republish} = %v, want 2000", got)
	}
	waitRows(t, r.store, 10000, 30*time.Second)
	checkShards(t, r, c, 10000)
}

// TestShardDyingMidBatchLosesAndDuplicatesNothing kills the second shard
// while the collector inserts through the Distributed table: inserts that
// carry rows for it fail (insert_distributed_sync), the collector retries,
// and after the shard restarts every event is stored once.
func TestShardDyingMidBatchLosesAndDuplicatesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("shard outage")
	}
	c := testenv.NewClickHouseCluster(t, 2)
	r := newShardedRig(t, c, c.NewDatabase(t))
	cfg := testConfig()
	cfg.RetryMin, cfg.RetryMax = 100*time.Millisecond, 500*time.Millisecond
	_, reg := r.startWithRegistry(t, cfg)
	publish(t, r.js, "k-", 0, 5000, 50)
	waitRows(t, r.store, 5000, 60*time.Second)

	done := make(chan struct{})
	go func() { defer close(done); publish(t, r.js, "k-", 5000, 30000, 50) }()
	time.Sleep(300 * time.Millisecond) // batches in flight
	c.Shards[1].Kill()
	time.Sleep(3 * time.Second)
	if got := counterValue(t, reg, "tenantguard_collector_insert_errors_total"); got == 0 {
		t.Errorf("insert errors with a shard down: got 0, want some (inserts must wait for every shard)")
	}
	if err := c.Shards[1].Start(); err != nil {
		t.Fatal(err)
	}
	<-done
	waitRows(t, r.store, 35000, 90*time.Second)
	checkShards(t, r, c, 35000)
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			v += m.GetCounter().GetValue()
		}
	}
	return v
}
