// Package collector is the ingest stage. It takes usage events from the
// JetStream stream TENANTGUARD_USAGE, partitioned by tenant, through one
// pinned pull consumer per partition it owns (collector/partition decides
// which, with KV leases, and Handover hears of every change),
// validates them (invalid ones go to TENANTGUARD_DLQ with a reason), prices
// them, batches them (up to batch_max_rows under load, small and fast when
// idle), and inserts each batch into ClickHouse. A batch acks the last
// message of each slot (AckAll) after its rows are stored, so a crash or a
// ClickHouse outage loses nothing; redelivered messages are checked against
// ClickHouse first, so nothing is stored twice.
//
// Lifecycle: New, then Run (blocks until the context ends), then Close.
// Observers see each stored event once, after its batch is inserted.
package collector
