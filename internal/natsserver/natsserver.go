// Package natsserver starts an embedded nats-server with JetStream on
// loopback: the one way `tenantguard dev`, the ingest benchmark and the
// tests run NATS in-process. In: a store directory, a port (0 picks a free
// one) and optional base options (accounts, users, permissions). Out: a
// running *server.Server and its client URL; Shutdown stops it.
//
// StartCluster starts N such servers routed into one JetStream cluster on
// free loopback ports, for tests of replicated streams and buckets: nodes
// can be killed and restarted with their store, and the cluster says which
// node leads JetStream and each stream.
package natsserver

import (
	"errors"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options are what callers choose; everything else is fixed: loopback,
// JetStream on, no signal handling, no logging.
type Options struct {
	// Base, when set, is the starting point (for example parsed from a
	// nats-server config file); the fields below override it.
	Base *server.Options
	// StoreDir holds JetStream's files. Required.
	StoreDir string
	// Port to listen on; 0 or -1 picks a free port.
	Port int
	// MaxStore and MaxMemory bound JetStream. Defaults 8 GiB and 256 MiB.
	MaxStore, MaxMemory int64
}

// ErrNotReady is returned when the server does not accept connections
// within 10 s.
var ErrNotReady = errors.New("embedded nats: not ready after 10s")

// Start starts the server and waits until it accepts connections.
func Start(o Options) (*server.Server, error) {
	opts := server.Options{}
	if o.Base != nil {
		opts = *o.Base
	}
	opts.Host = "127.0.0.1"
	opts.Port = o.Port
	if opts.Port == 0 {
		opts.Port = -1
	}
	opts.JetStream = true
	opts.StoreDir = o.StoreDir
	opts.NoLog, opts.NoSigs = true, true
	opts.JetStreamMaxStore, opts.JetStreamMaxMemory = o.MaxStore, o.MaxMemory
	if opts.JetStreamMaxStore == 0 {
		opts.JetStreamMaxStore = 8 << 30
	}
	if opts.JetStreamMaxMemory == 0 {
		opts.JetStreamMaxMemory = 256 << 20
	}
	srv, err := server.NewServer(&opts)
	if err != nil {
		return nil, err
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, ErrNotReady
	}
	return srv, nil
}
