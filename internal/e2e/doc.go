// Package e2e holds end-to-end tests that run the tenantguard binary as a
// user would, against real NATS and ClickHouse, and check it only through
// its contracts: the wire format, the HTTP API, /metrics, the tables and the
// exit codes. It has no code of its own outside tests.
package e2e
