// Package pgstat audits Postgres databases for tenant isolation.
//
// It takes in, per configured DSN, the rows of pg_stat_statements (pulled
// on an interval with deltas per (userid, dbid, queryid, toplevel); it
// never resets the view and fetches query text only for new queryids) and
// a model of the catalog: tenant tables (those with the tenant column, or
// configured), RLS flags, policies, owners, BYPASSRLS roles and views
// resolved to their base tables.
//
// Each statement is parsed with pg_query_go (the real Postgres parser) and
// every tenant table it reads or writes is checked: it is restricted when
// a predicate pins its tenant column to one value on every path, or when
// RLS restricts it for the role that ran the statement. Verdicts are
// cached by queryid, so an unchanged workload is parsed once.
//
// It puts out findings (classes unscoped, multi_tenant, unknown) to the
// ClickHouse table pg_findings, the gauge tenantguard_pg_findings{class,
// database}, an alert for each new unscoped statement through Alerter, and
// an RLS audit of the tenant tables.
//
// Lifecycle: New(cfg, opts...) builds a Stage; Run(ctx) pulls every
// Interval until ctx is done; Scan(ctx) does one pull and returns a
// Report (used by `tenantguard pg-audit`); Close() closes connections and
// is idempotent.
package pgstat
