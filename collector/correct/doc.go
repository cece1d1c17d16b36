// Package correct voids and amends stored events, for billing disputes and
// over-reporting bugs.
//
// It takes in corrections (event.Correction: the original's tenant and id,
// void or a new quantity, a reason and who made it) and puts out one
// corrections row per applied correction in ClickHouse. The original events
// row stays for audit; each corrections row carries the deltas it makes
// (count, quantity, cost, errors) at the original's time, which a
// materialized view adds to usage_1m and the billing export nets out.
//
// The Applier holds the rules, once: the event must exist for that tenant
// (across collector.lateness, or all time when forced), must not be voided,
// must be younger than collector.lateness unless forced, and an amendment
// must change the quantity and keep the cost in its column. A refused
// correction changes nothing. A correction id applied before is a
// duplicate, so every path can retry.
//
// The Service is the daemon's side of the NATS path: it consumes the
// TENANTGUARD_CORRECTIONS stream through one durable consumer with one
// request in flight, so corrections are applied one at a time across every
// replica; it replies on the request's Tenantguard-Reply subject and tells
// its observers (the exporter's counters, the detector's spend tracking).
// Its lifecycle is NewService, Run(ctx), Close. The emitter SDK
// (collector/emit, Correct) and `tenantguard correct` publish requests.
package correct
