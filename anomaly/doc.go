// Package anomaly detects per-tenant anomalies on 1-minute windows and
// tracks monthly spend caps.
//
// In: the collector calls Detector.Observe(e, cost) for every stored event
// (the hot path: no allocations, well under 200 ns). Replay and warm start
// feed per-minute rollups through Detector.ObserveRollup. Out: Alert values
// sent to a Sink (one method, must not block), one "firing" Alert when an
// episode starts and one "resolved" Alert (with EndsAt) when it ends.
//
// Detectors, all sharing one state machine (k windows in a row to fire, a
// quiet period with hysteresis to resolve, then a cool-down):
//   - usage: per tenant and kind, count (or quantity for quantity kinds)
//     against a seasonal baseline; a quasi-Poisson CUSUM (over-dispersion
//     estimated online) combined with a ratio test and a minimum volume;
//   - cost: spend per hour against the same seasonal baseline;
//   - fast path (usage and cost): each evaluation also tests the open
//     window once fast_path.min_elapsed of it has passed, extrapolating its
//     rate, and fires at once on overwhelming single-window evidence, so
//     a 5x spike alerts well within a minute;
//   - error_rate: per tenant and per integration (route or
//     attrs["integration"]);
//   - latency_p95: per tenant, from a fixed-size log histogram per window;
//   - spend_cap: 70/90/100% of the plan's monthly cap, once per tenant,
//     threshold and billing month.
//
// Lifecycle: New, then Run(ctx) evaluates on a clock (default every 10 s)
// until ctx ends; Close is idempotent. Advance(now) runs one evaluation at
// an explicit time, which is how replay drives the same code on a simulated
// clock. WarmStart loads baselines and month-to-date spend from ClickHouse.
package anomaly
