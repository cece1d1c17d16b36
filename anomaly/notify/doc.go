// Package notify delivers anomaly alerts to on-call systems: Alertmanager
// (API v2), a signed generic webhook, the NATS subject
// tenantguard.alerts.<tenant_id>, and the ClickHouse table anomalies.
//
// It takes in anomaly.Alert values from the detector through
// Fanout.Send, which never blocks: each sink has its own bounded queue
// (overflow drops the oldest or the newest alert and counts it) and its own
// worker goroutine, so a slow or unreachable sink never delays detection or
// the other sinks. Each sink retries with exponential backoff and jitter and
// counts what it sent, what failed and what was dropped in
// tenantguard_notifier_*_total{sink} on the Registerer it is given.
//
// Lifecycle: New builds the configured sinks; Run starts the workers and
// blocks until its context is cancelled, then drains the queues for at most
// Config.DrainTimeout; Close stops accepting alerts, ends Run the same way,
// and is idempotent.
//
// The Alertmanager sink follows Alertmanager's resend semantics, like
// Prometheus: a firing alert is posted when it first fires, then at most
// once per resend interval with endsAt = now + resolve timeout (so
// Alertmanager resolves it by itself if tenantguard dies), and a resolved
// alert is posted with its endsAt and re-posted for the resolved retention
// period. See docs/alerts.md for labels, payloads and how a webhook receiver
// verifies the HMAC signature.
package notify
