// Package daemon is `tenantguard run` (and the daemon inside
// `tenantguard dev`): it builds every stage switched on in one Config —
// collector, exporter metrics, anomaly detector, alert sinks, decision
// engine and its audit trail, Postgres auditor, the HTTP API and the
// /metrics listener — over one NATS connection and two ClickHouse pools.
//
// Lifecycle: New checks the Config and reads the signing key; Run opens
// the connections, starts the listeners first (so /healthz answers at
// once), waits for ClickHouse and NATS, starts the stages and blocks until
// its context ends; everything it built goes on one cleanup stack that
// Close (called by Run on every path) unwinds in reverse order.
//
// Flow: the collector stores each event, then hands it to the observers
// (exporter metrics, detector); alerts go to the sinks, the live view and
// the decision engine; the engine writes decisions to the KV bucket; the
// trail follows the bucket, records every revision in ClickHouse and tells
// the live view and the throttled gauge. Nothing is polled back.
package daemon
