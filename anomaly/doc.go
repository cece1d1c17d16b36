// Package anomaly detects per-tenant anomalies on 1-minute windows and on
// windows over the last 5, 15 and 60 minutes, and tracks monthly spend
// caps.
//
// In: the collector calls Detector.Observe(e, cost) for every stored event
// (the hot path: no allocations, well under 200 ns). Replay and warm start
// feed per-minute rollups through Detector.ObserveRollup. Out: Alert values
// sent to a Sink (one method, must not block), one "firing" Alert when an
// episode starts and one "resolved" Alert (with EndsAt and the same
// labels) when it ends.
//
// Detectors, all sharing one state machine (series: k windows in a row to
// fire, a quiet run of quiet_period to resolve, then a cool-down):
//   - usage: per tenant and kind, count (or quantity for quantity kinds)
//     against a seasonal baseline; a quasi-likelihood CUSUM with a
//     negative-binomial dispersion (Poisson plus noise that grows with the
//     rate, estimated online), combined with a ratio test;
//   - cost: spend per hour against the same seasonal baseline;
//   - scales (usage and cost): a series whose single minute holds too few
//     events to show a spike is also tested over the last 5, 15 and 60
//     minutes, built from its 1-minute values (block sums updated as a
//     minute closes), with the same test on each window; the alert
//     carries the scale it fired on (label "scale") and resolves on
//     windows of that scale; one spike is one episode whatever the scales
//     that see it;
//   - fast path (usage and cost): each evaluation also tests the open
//     window once fast_path.min_elapsed of it has passed, extrapolating its
//     rate, and fires at once on overwhelming single-window evidence, so
//     a 5x spike alerts well within a minute;
//   - error_rate: per tenant and per integration (route or
//     attrs["integration"]);
//   - latency_p95: per tenant, from a fixed-size log histogram per window;
//   - spend_cap: 70/90/100% of the plan's monthly cap, once per tenant,
//     threshold and billing month, across restarts and replicas: the
//     alert's fingerprint names the tenant, threshold and month, and
//     which thresholds were alerted is read back from the anomalies
//     table, never inferred from spend.
//
// Lifecycle: New, then Run(ctx) evaluates on a clock (default every 10 s)
// until ctx ends; Close is idempotent. Advance(now) runs one evaluation at
// an explicit time, which is how replay drives the same code on a simulated
// clock. WarmStart loads baselines and month-to-date spend from ClickHouse.
//
// Scale-out: each tenant has one owner replica. Handover(ctx, src, owns,
// now) makes a running detector hold exactly the tenants owns accepts:
// released tenants are forgotten without resolving their episodes (the
// new owner continues them), newly owned ones are warm-started (in a
// scratch detector, then moved in), with their open episodes continued
// under the fingerprints the anomalies table recorded. WarmStart is
// Handover for a detector that owns every tenant.
package anomaly
