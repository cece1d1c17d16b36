package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/internal/chserver"
)

// ClusterName is the cluster that NewClickHouseCluster and ClickHouseShards
// configure in each server's remote_servers.
const ClusterName = "tenantguard_test"

// ClickHouseCluster is a set of clickhouse-server child processes, one
// per shard, each with the same remote_servers section naming them all as
// the cluster Name (one replica per shard, no ZooKeeper).
type ClickHouseCluster struct {
	Name   string
	Shards []*ClickHouseServer
}

// Addrs returns the native address of each shard, in shard order.
func (c *ClickHouseCluster) Addrs() []string {
	out := make([]string, len(c.Shards))
	for i, s := range c.Shards {
		out[i] = s.Addr
	}
	return out
}

func startCluster(dir string, shards int, t testing.TB) (*ClickHouseCluster, error) {
	tcp := make([]int, shards)
	addrs := make([]string, shards)
	for i := range tcp {
		tcp[i] = FreePort(t)
		addrs[i] = "127.0.0.1:" + strconv.Itoa(tcp[i])
	}
	c := &ClickHouseCluster{Name: ClusterName}
	for i := range tcp {
		sdir := filepath.Join(dir, "shard"+strconv.Itoa(i+1))
		s, err := chserver.StartInCluster(sdir, tcp[i], FreePort(t), chserver.Cluster{Name: ClusterName, Shards: addrs})
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Shards = append(c.Shards, &ClickHouseServer{s})
	}
	return c, nil
}

// Stop stops every shard.
func (c *ClickHouseCluster) Stop() {
	for _, s := range c.Shards {
		s.Stop()
	}
}

// NewClickHouseCluster starts a dedicated cluster of shards servers that
// stops at the end of t. Use it for tests that stop or kill a shard;
// others use ClickHouseShards.
func NewClickHouseCluster(t testing.TB, shards int) *ClickHouseCluster {
	t.Helper()
	if ClickHouseBinary() == "" {
		missing(t, "clickhouse-server")
	}
	c, err := startCluster(t.TempDir(), shards, t)
	if err != nil {
		t.Fatalf("clickhouse cluster: %v", err)
	}
	t.Cleanup(c.Stop)
	return c
}

// NewDatabase picks a unique database name and drops that database on
// every shard at the end of t. It creates nothing: the store's migrations
// create the database on each shard.
func (c *ClickHouseCluster) NewDatabase(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		for _, s := range c.Shards {
			ctx, cancel := ctxTimeout(30 * time.Second)
			if conn, err := s.open("default"); err == nil {
				_ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name)
				conn.Close()
			}
			cancel()
		}
	})
	return name
}

var (
	sharedCluster     *ClickHouseCluster
	sharedClusterErr  error
	sharedClusterOnce sync.Once
)

// ClickHouseShards returns the test binary's shared two-shard cluster
// and a fresh database name for it. The cluster is started on first use
// and stopped by Main.
func ClickHouseShards(t testing.TB) (*ClickHouseCluster, string) {
	t.Helper()
	if ClickHouseBinary() == "" {
		missing(t, "clickhouse-server")
	}
	sharedClusterOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tenantguard-chcluster-")
		if err != nil {
			sharedClusterErr = err
			return
		}
		sharedCluster, sharedClusterErr = startCluster(dir, 2, t)
		atExit(func() {
			if sharedCluster != nil {
				sharedCluster.Stop()
			}
			os.RemoveAll(dir)
		})
	})
	if sharedClusterErr != nil {
		t.Fatalf("clickhouse cluster: %v", sharedClusterErr)
	}
	return sharedCluster, sharedCluster.NewDatabase(t)
}
