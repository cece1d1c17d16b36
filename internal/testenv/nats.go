package testenv

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSServer is an embedded nats-server with JetStream. Restart keeps its
// port and store, so clients reconnect to the same data.
type NATSServer struct {
	URL  string
	opts server.Options
	srv  *server.Server
}

// NATS starts an embedded JetStream server that stops at the end of t.
func NATS(t testing.TB) *NATSServer {
	t.Helper()
	n := &NATSServer{opts: server.Options{
		Host:      "127.0.0.1",
		Port:      FreePort(t),
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	}}
	n.opts.JetStreamMaxMemory = 256 << 20
	n.opts.JetStreamMaxStore = 8 << 30
	n.URL = "nats://127.0.0.1:" + itoa(n.opts.Port)
	if err := n.Start(); err != nil {
		t.Fatalf("nats: %v", err)
	}
	t.Cleanup(n.Shutdown)
	return n
}

// Start starts the server if it is not running.
func (n *NATSServer) Start() error {
	if n.srv != nil && n.srv.Running() {
		return nil
	}
	opts := n.opts
	srv, err := server.NewServer(&opts)
	if err != nil {
		return err
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return errNotReady
	}
	n.srv = srv
	return nil
}

// Shutdown stops the server; Start brings it back with the same data.
func (n *NATSServer) Shutdown() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
}

// Restart stops and starts the server.
func (n *NATSServer) Restart(t testing.TB) {
	t.Helper()
	n.Shutdown()
	if err := n.Start(); err != nil {
		t.Fatalf("nats restart: %v", err)
	}
}

// Server returns the running server, for tests that inspect it.
func (n *NATSServer) Server() *server.Server { return n.srv }

type notReady struct{}

func (notReady) Error() string { return "nats-server not ready for connections after 10s" }

var errNotReady error = notReady{}
