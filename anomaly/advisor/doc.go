// Package advisor finds heavy tenants: tenants that hold a large share of
// the pooled resources for a sustained period, and so belong on dedicated
// infrastructure.
//
// In: each tenant's hourly use of four pooled resources, read from
// ClickHouse (Source; *store.Store): events of every kind, cost, db_query
// time (the sum of latency_ms of db_query events) and compute seconds.
// Events, cost and compute seconds come from usage_1m; db_query time from
// events, since usage_1m keeps latency quantiles, not sums. Reading stored
// data, a report works after a restart and over any past range.
//
// Out: a Report per range. In each hour a tenant's share of a resource is
// its use over every tenant's; it is over when the share exceeds
// advisor.share. A tenant over in at least advisor.sustained of the
// range's hours in one resource gets "move_to_dedicated"; one over in at
// least advisor.watch of the hours, or whose share in the last
// advisor.trend rose by advisor.trend_factor, gets "watch". Evaluate also
// sends one firing heavy_tenant Alert to the Sink when a tenant becomes
// heavy, with one fingerprint per tenant, and a resolved one when it no
// longer is.
//
// Lifecycle: New, then Run(ctx) evaluates the last advisor.window at once
// and every advisor.interval until ctx ends or Close (idempotent).
// Report and Evaluate may also be called directly.
package advisor
