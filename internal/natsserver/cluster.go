package natsserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ClusterOptions describe an embedded JetStream cluster on loopback.
type ClusterOptions struct {
	// Nodes is the number of servers. Default 3.
	Nodes int
	// StoreDir holds one JetStream directory per node (n1, n2, ...).
	// Required.
	StoreDir string
	// Name is the cluster's name. Default "tenantguard".
	Name string
}

// Cluster is a set of embedded nats-server nodes routed to each other with
// JetStream on. Each node keeps its ports and store across Kill and
// Restart, as a real server that crashes and comes back would.
type Cluster struct {
	name  string
	nodes []*clusterNode
}

type clusterNode struct {
	mu          sync.Mutex
	opts        server.Options // the full options; Restart reuses them
	srv         *server.Server
	clientURL   string
	clusterPort int
}

// ErrNoMetaLeader is returned when the cluster elects no JetStream meta
// leader in time.
var ErrNoMetaLeader = errors.New("embedded nats cluster: no JetStream meta leader")

// StartCluster starts o.Nodes servers on free loopback ports, routed to
// each other, and waits until every one accepts connections. Call
// WaitMetaLeader before creating streams.
func StartCluster(o ClusterOptions) (*Cluster, error) {
	if o.StoreDir == "" {
		return nil, errors.New("embedded nats cluster: StoreDir is required")
	}
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Nodes < 1 {
		return nil, errors.New("embedded nats cluster: Nodes must be >= 1")
	}
	if o.Name == "" {
		o.Name = "tenantguard"
	}
	ports, err := freePorts(2 * o.Nodes)
	if err != nil {
		return nil, err
	}
	c := &Cluster{name: o.Name}
	routes := make([]string, o.Nodes)
	for i := range o.Nodes {
		routes[i] = "nats-route://127.0.0.1:" + strconv.Itoa(ports[o.Nodes+i])
	}
	for i := range o.Nodes {
		name := "n" + strconv.Itoa(i+1)
		opts := server.Options{
			ServerName:         name,
			Host:               "127.0.0.1",
			Port:               ports[i],
			JetStream:          true,
			StoreDir:           filepath.Join(o.StoreDir, name),
			NoLog:              true,
			NoSigs:             true,
			JetStreamMaxStore:  1 << 30,
			JetStreamMaxMemory: 64 << 20,
		}
		opts.Cluster.Name = o.Name
		opts.Cluster.Host = "127.0.0.1"
		opts.Cluster.Port = ports[o.Nodes+i]
		for j, r := range routes {
			if j != i {
				opts.Routes = append(opts.Routes, server.RoutesFromStr(r)...)
			}
		}
		c.nodes = append(c.nodes, &clusterNode{opts: opts, clientURL: "nats://127.0.0.1:" + strconv.Itoa(ports[i]),
			clusterPort: ports[o.Nodes+i]})
	}
	for i := range c.nodes {
		if err := c.Restart(i); err != nil {
			c.Shutdown()
			return nil, err
		}
	}
	return c, nil
}

// freePorts returns n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// URL is every node's client URL, comma-separated, as nats.url takes it.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		urls[i] = n.clientURL
	}
	return strings.Join(urls, ",")
}

// NodeURL is node i's client URL.
func (c *Cluster) NodeURL(i int) string { return c.nodes[i].clientURL }

// Nodes is the number of nodes, running or not.
func (c *Cluster) Nodes() int { return len(c.nodes) }

// NodeName is node i's server name (n1, n2, ...), as JetStream reports
// stream and meta leaders.
func (c *Cluster) NodeName(i int) string { return c.nodes[i].opts.ServerName }

// Server returns node i's server, nil while it is killed.
func (c *Cluster) Server(i int) *server.Server {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Kill stops node i at once, as a crash would; its store stays.
func (c *Cluster) Kill(i int) {
	n := c.nodes[i]
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Restart starts node i again with its ports and store (or starts it for
// the first time); a running node is left alone.
func (c *Cluster) Restart(i int) error {
	n := c.nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil && n.srv.Running() {
		return nil
	}
	opts := n.opts
	opts.Routes = append([]*url.URL(nil), n.opts.Routes...)
	srv, err := server.NewServer(&opts)
	if err != nil {
		return fmt.Errorf("node %s: %w", opts.ServerName, err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("node %s: %w", opts.ServerName, ErrNotReady)
	}
	n.srv = srv
	return nil
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	for i := range c.nodes {
		c.Kill(i)
	}
}

// WaitMetaLeader waits until a running node is the JetStream meta leader,
// every running node knows it, and the leader sees every running node as
// an online peer (else placing a stream with as many replicas fails with
// "no suitable peers"). It returns the leader's index.
func (c *Cluster) WaitMetaLeader(ctx context.Context) (int, error) {
	for {
		leader, current, running := -1, true, 0
		for i := range c.nodes {
			srv := c.Server(i)
			if srv == nil {
				continue
			}
			running++
			if srv.JetStreamIsLeader() {
				leader = i
			}
			if !srv.JetStreamIsCurrent() {
				current = false
			}
		}
		if leader >= 0 && current {
			if srv := c.Server(leader); srv != nil && len(srv.JetStreamClusterPeers()) >= running {
				return leader, nil
			}
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("%w: %w", ErrNoMetaLeader, ctx.Err())
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// StreamLeader returns the index of the running node that leads stream in
// the global account ("$G"), or -1 when none does now. A KV bucket's
// stream is named KV_<bucket>.
func (c *Cluster) StreamLeader(stream string) int {
	for i := range c.nodes {
		if srv := c.Server(i); srv != nil && srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// WaitStreamLeader waits until a running node leads stream and returns
// its index.
func (c *Cluster) WaitStreamLeader(ctx context.Context, stream string) (int, error) {
	for {
		if i := c.StreamLeader(stream); i >= 0 {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("stream %s has no leader: %w", stream, ctx.Err())
		case <-time.After(25 * time.Millisecond):
		}
	}
}
