package ingestbench

import (
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tenantguard/tenantguard/internal/chserver"
	"github.com/tenantguard/tenantguard/internal/natsserver"
)

func netListen() (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

func portOf(addr string) int {
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(p)
	return n
}

// servers are what one bench run starts: an embedded NATS server and a
// clickhouse-server, both keeping their data in dir, and a connection to NATS.
type servers struct {
	dir    string
	ns     *server.Server
	ch     *chserver.Server
	nc     *nats.Conn
	closed []func()
}

// startServers starts the servers in dir, a temporary directory removed by
// stop when dir is "".
func startServers(dir string) (*servers, error) {
	s := &servers{dir: dir}
	if dir == "" {
		d, err := os.MkdirTemp("", "tenantguard-bench-")
		if err != nil {
			return nil, err
		}
		s.dir = d
		s.closed = append(s.closed, func() { os.RemoveAll(d) })
	}
	ns, err := natsserver.Start(natsserver.Options{StoreDir: filepath.Join(s.dir, "nats"), MaxStore: 16 << 30})
	if err != nil {
		s.stop()
		return nil, err
	}
	s.ns = ns
	s.closed = append(s.closed, ns.Shutdown)
	ch, err := chserver.Start(filepath.Join(s.dir, "clickhouse"), freePort(), freePort())
	if err != nil {
		s.stop()
		return nil, err
	}
	s.ch = ch
	s.closed = append(s.closed, ch.Stop)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		s.stop()
		return nil, err
	}
	s.nc = nc
	s.closed = append(s.closed, nc.Close)
	return s, nil
}

// stop closes what startServers started, in reverse order.
func (s *servers) stop() {
	for i := len(s.closed) - 1; i >= 0; i-- {
		s.closed[i]()
	}
	s.closed = nil
}
