// Package devstack is the stack `tenantguard dev` runs on one machine: an
// embedded NATS server with JetStream and a clickhouse-server child
// process on free ports, their data under one directory, and the config
// changes that point the daemon at them.
//
// Start takes the loaded daemon Config and the data directory. It reuses
// the ports of the last run when they are free, bounds the data it keeps
// (unless the config sets those keys), makes the decisions signing key and
// the dev API token once (the token 0600; the config holds only its
// SHA-256), and writes the config file every other command run from the
// folder reads. The daemon itself is not started here: daemon.New checks
// the Config after the last change. Close stops ClickHouse, then NATS.
// StopKeys lets Ctrl-C on a terminal stop dev without a signal.
package devstack
