// Package decide is the daemon's decision engine. It takes in anomaly
// alerts (it is an anomaly.Sink) and puts out limiter decisions in the KV
// bucket tenantguard_decisions, an audit row per decision in the ClickHouse
// table decisions, and metrics.
//
// Policies, per plan (Config.Plans, falling back to the top-level values):
//   - a firing usage spike becomes a throttle of the tenant (scope all) to
//     throttle_factor x the baseline rate;
//   - a firing error_rate alert on an integration opens that integration's
//     circuit (scope integration:<name>) for the tenant;
//   - a spend_cap alert at 100% becomes a degraded-tier throttle.
//
// Every decision expires after ttl; the engine renews it every renew_every
// while its alert is firing, and clears it when the alert resolves. A live
// manual decision outranks the engine: the publisher refuses the write
// (limiter.ErrManualOverride), the engine counts it as suppressed and
// retries at the next renewal, so it takes over once the manual one expires.
//
// Neither NATS nor ClickHouse can stall the engine: each KV write is bounded
// by kv_timeout and none happens under the state lock; the audit trail is
// written by its own goroutine from a bounded queue (audit_queue_size,
// overflow dropped and counted in tenantguard_decisions_audit_dropped_total),
// failed inserts retried with backoff.
//
// Lifecycle: New(cfg, deps), Run(ctx) (alerts, renewals, the audit writer and
// sweeps; returns nil on cancel, after one last audit attempt bounded by
// audit_timeout), Close (idempotent).
package decide
