// Package store is tenantguard's ClickHouse layer: versioned migrations that
// check the server version, the batch insert of priced events, the
// redelivery check that keeps ingest exactly-once, and retention.
//
// It takes a Config (addresses, database, credentials), opens one pooled
// native-protocol connection (HTTP mode does not work on 18.16), and is
// closed with Close. All SQL keeps to what ClickHouse 18.16 and current
// releases both accept, and every INSERT lists its columns.
package store
