// Package pgmeter meters a service's Postgres time per tenant, through
// pgx v5: a Tracer (pgx.QueryTracer and pgx.BatchTracer) that turns every
// query into a db_query usage event for the tenant in the query's context,
// and InTenant, which runs a function in a transaction whose
// app.current_tenant setting is that tenant, the setting row-level security
// policies read (and the one tenantguard pg-audit expects).
//
// In: queries run through a pgx.Conn or pgxpool.Pool whose ConnConfig
// Tracer is a Tracer, with a context that carries the tenant
// (event.WithIdentity; the collector/meter Handler puts it there). Out: one
// event per query on the collector/meter Meter's queue: the latency, the
// rows (from the command tag), the statement's operation as the route
// (SELECT, INSERT, …; the main statement of a WITH) and its fingerprint in
// attrs, the SQLSTATE of a failed query, and Config.Database if set. Never the SQL text,
// so no literal leaves the process.
//
// The fingerprint is a 64-bit FNV-1a hash of the SQL text as given, not of
// a parsed statement: parsing (pg_query) needs cgo and stays out of the
// SDK. Services pass values as $n parameters, so one statement keeps one
// fingerprint whatever its arguments; a statement with inlined literals
// gets a fingerprint per distinct text (bounded per process by
// Config.MaxStatements for the cache; the events stay correct beyond it).
//
// This is the only package of the SDK that imports pgx, and nothing else in
// the SDK imports it: a service without Postgres never builds it.
package pgmeter
