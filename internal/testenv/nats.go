package testenv

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/tenantguard/tenantguard/internal/natsserver"
)

// NATSServer is an embedded nats-server with JetStream. Restart keeps its
// port and store, so clients reconnect to the same data.
type NATSServer struct {
	URL  string
	opts server.Options // from NATSOptions; natsserver.Start sets the rest
	port int
	dir  string
	srv  *server.Server
}

// NATSOption changes the embedded server's options.
type NATSOption func(t testing.TB, o *server.Options)

// NATSConfig starts the server from a nats-server configuration file's
// text (accounts, users, permissions, ...), as a deployment would; the
// listen address, the JetStream store and logging stay the test's.
func NATSConfig(conf string) NATSOption {
	return func(t testing.TB, o *server.Options) {
		t.Helper()
		path := filepath.Join(t.TempDir(), "nats-server.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := o.ProcessConfigFile(path); err != nil {
			t.Fatalf("nats config: %v", err)
		}
	}
}

// NATS starts an embedded JetStream server that stops at the end of t.
func NATS(t testing.TB, opts ...NATSOption) *NATSServer {
	t.Helper()
	n := &NATSServer{}
	for _, o := range opts {
		o(t, &n.opts)
	}
	n.port, n.dir = FreePort(t), t.TempDir()
	n.URL = "nats://127.0.0.1:" + itoa(n.port)
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
	srv, err := natsserver.Start(natsserver.Options{Base: &opts, StoreDir: n.dir, Port: n.port})
	if err != nil {
		return err
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

// Connect connects to the NATS server at url, failing the test if it
// cannot; the connection is closed when the test ends.
func Connect(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
