package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/internal/natsserver"
)

// NATSCluster is an embedded JetStream cluster of n nodes on loopback. URL
// lists every node, so clients fail over when one is killed.
type NATSCluster struct {
	*natsserver.Cluster
}

// NATSClusterOf starts an n-node JetStream cluster that stops at the end of
// t, and waits for its meta leader, so streams with n replicas can be
// created at once.
func NATSClusterOf(t testing.TB, n int) *NATSCluster {
	t.Helper()
	c, err := natsserver.StartCluster(natsserver.ClusterOptions{Nodes: n, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatalf("nats cluster: %v", err)
	}
	t.Cleanup(c.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.WaitMetaLeader(ctx); err != nil {
		t.Fatalf("nats cluster: %v", err)
	}
	return &NATSCluster{Cluster: c}
}

// KillStreamLeader kills the node that leads stream (KV_<bucket> for a
// bucket) and returns its index.
func (c *NATSCluster) KillStreamLeader(t testing.TB, stream string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	i, err := c.WaitStreamLeader(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(i)
	return i
}

// RestartNode starts node i again with its store and waits until the
// cluster has a meta leader that every running node knows.
func (c *NATSCluster) RestartNode(t testing.TB, i int) {
	t.Helper()
	if err := c.Restart(i); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.WaitMetaLeader(ctx); err != nil {
		t.Fatal(err)
	}
}
