// Package decide is the daemon's decision engine and the audit trail of
// decisions. The Engine takes in anomaly alerts (it is an anomaly.Sink) and
// puts out signed limiter decisions in the KV bucket
// tenantguard_decisions, and metrics. The Trail takes in every revision of
// that bucket, whoever wrote it, and puts out one row per revision in the
// ClickHouse table decisions, with whether its signature verified.
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
// by kv_timeout and none happens under the state lock; the engine never
// writes to ClickHouse.
//
// The Trail resumes after the highest revision the table holds, queues
// revisions for its writer goroutine (audit_queue_size; while the queue is
// full it stops watching and later resumes from the first revision it could
// not queue) and retries failed inserts with backoff, leaving out revisions
// an insert that failed late stored anyway, so each revision is one row.
//
// Scale-out: only a tenant's owner replica renews or clears its automatic
// decisions. Handover(ctx, owns) releases the tenants owns rejects (their
// decisions stay live for the new owner; their alerts are ignored) and
// adopts the live automatic decisions of newly owned tenants from the
// bucket (Lister), renewed as they are and cleared when the episode their
// anomaly_id names resolves.
//
// Lifecycle: New(cfg, deps) and NewTrail(cfg, deps); Run(ctx) on each
// (blocks; returns nil on cancel; the trail's writer gets one last attempt,
// bounded by audit_timeout); Close (idempotent).
//
// List, WriteText and WriteJSON show the bucket's entries as `tenantguard
// decisions` prints them, with any control or format character escaped.
package decide
