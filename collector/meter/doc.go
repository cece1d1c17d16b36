// Package meter instruments a service in three lines: an HTTP middleware
// that meters and guards every request, an http.RoundTripper that meters
// and guards outbound calls to third-party integrations, and (in the
// separate package collector/pgmeter, which alone imports pgx) a Postgres
// query tracer. All three share one Meter.
//
// In: requests, outbound calls and queries, each attributed to the tenant
// (and optionally the user) the limiter middleware's TenantFunc resolves;
// the Handler puts that identity into the request's context
// (event.WithIdentity), where the Transport and the tracer find it. Out:
// one usage event per operation (api_request, webhook_call or a configured
// kind, db_query) handed to the emitter, and the limiter's answers: 429
// with Retry-After when throttled or shed, 503 when an integration's
// circuit is open, fail-fast errors from the Transport.
//
// Hot path: a request costs a tenant lookup, the limiter's Check, one
// allocation for its context node, writer and body counter, one for the
// request copy that carries the context, and a copy of a fixed-size Record
// into a bounded queue. Turning a Record into an event (attrs map, id,
// JSON) and publishing it happen on the Meter's goroutine, which hands the
// queue to the emitter every FlushInterval. When the queue is full, records
// are dropped and counted (tenantguard_meter_dropped_total): a request never
// waits for metering, whatever the emitter's overflow policy.
//
// Lifecycle: New starts the goroutine; Flush hands everything queued to
// the emitter; Close (idempotent) stops taking records and flushes. Close
// the Meter before the emitter. The package imports collector/event,
// collector/emit, limiter, nats.go (through them) and client_golang only.
package meter
