// Package testenv starts the real servers that tenantguard's tests run
// against: embedded NATS with JetStream, a clickhouse-server child process
// (or a cluster of them, one per shard, serving Distributed tables), a Postgres cluster with pg_stat_statements, Prometheus and Alertmanager.
//
// Each server starts with one call, on free loopback ports, under a temporary
// directory, and stops when the test (or, for shared servers, the test
// binary) ends. When a server binary is missing the test is skipped with a
// message, unless CI=true, where it fails: CI can never pass by skipping.
//
// Packages that use a shared server call Main from TestMain so its child
// process and data are removed at the end:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
package testenv
