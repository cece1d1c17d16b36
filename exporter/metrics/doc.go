// Package metrics is the exporter's per-tenant Prometheus collector.
//
// It takes in every stored event through Observe(e, cost), the collector's
// observer hook, guard state from the daemon through two setters
// (SetActiveAnomalies, SetThrottled), and each tenant's spend cap from a
// source it asks (SetSpendCapSource). It puts out, at scrape time, the
// tenantguard_tenant_* series (events, quantity, errors, cost, request
// latency histogram, active anomalies, throttles, spend cap) through a
// custom prometheus.Collector registered on the Registerer passed to New.
// (tenantguard_pg_findings belongs to the Postgres auditor, collector/pgstat.)
//
// Cardinality is bounded: only the top-K tenants by a decayed event rate
// (Config.MaxTenantSeries, default 500) get their own tenant label; the rest
// are summed under tenant="__overflow__". Totals are kept per tenant
// internally, so summing any counter over tenant always equals everything
// observed, and no series ever decreases while it exists: a tenant entering
// the top-K starts its own series at the count it has from then on (or its
// whole count when it was never summed into the overflow), and a tenant
// leaving it hands its series value to the overflow in one step. That step
// is the trade-off: rate(...{tenant="__overflow__"}) shows a one-off bump
// when an evicted tenant's series is removed. Tenants idle for
// Config.IdleSeriesTTL (default 1h) lose their series and their state,
// spend cap included; a cap source gives a returning tenant its cap again.
//
// Scale-out: with one owner replica per tenant, Forget(owns) keeps the
// per-tenant gauges (active anomalies, throttled, spend cap) to the
// tenants the replica owns, so a sum over replicas counts each tenant
// once; counters stay on every replica that observed the events.
//
// Lifecycle: New registers; Observe and the setters may be called from any
// goroutine; Close unregisters and is idempotent. There is no Run: all
// housekeeping (ranking, idle eviction) happens during a scrape.
package metrics
