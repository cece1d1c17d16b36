// Package store is tenantguard's ClickHouse layer and the one owner of its
// SQL: versioned migrations that check the server version, and a typed
// handle per table, each in a file named after it (events, corrections,
// usage_1m, anomalies, decisions, pg_findings, billing_exports). A handle
// is a row struct mirroring its table, the column list its insert names
// (InsertColumns gives them all), and methods that run parameterized
// queries: the batch insert of priced events, the redelivery check that
// keeps ingest exactly-once, the warm-start reads of usage_1m and
// anomalies, the alert, decision, finding and billing-export writers, and
// retention.
//
// It takes a Config (addresses, database, credentials), opens one pooled
// native-protocol connection (HTTP mode does not work on 18.16), and is
// closed with Close. With clickhouse.cluster set it also opens a small pool
// per shard: each table is then a Distributed table over <table>_local on
// every shard, sharded by tenant (ShardingKeys), that every read and insert
// uses by its contract name, while migrations, retention and tenant
// deletion work on each shard's local tables (cluster.go,
// docs/clickhouse.md). Stages depend on the handles through interfaces of
// their own that *Store satisfies. All SQL keeps to what ClickHouse 18.16
// and current releases both accept, and every INSERT lists its columns.
package store
