// Package emit is the SDK services use to publish usage events. Emit
// validates and encodes an event and puts it in a bounded buffer; a sender
// publishes from the buffer to JetStream, one message per event with the
// event id as Nats-Msg-Id, and keeps each event until JetStream confirms
// it. When the usage stream allows batched publishing (allow_batched,
// nats-server 2.14 or later) the sender uses JetStream fast batches, one at
// a time, of up to Config.Batch events; otherwise, or when it cannot tell,
// it publishes each event asynchronously, and says which once in the log.
// It asks again after a reconnect or a failed batch. Events that fail to
// publish (NATS down or restarting, a batch the server ended early) are
// sent again with the same id, and the stream's duplicate window makes
// that safe, so nothing accepted into the buffer is lost while the process
// lives. When the buffer is full, Emit
// blocks or drops according to the overflow policy; drops and errors are
// counted in Stats and never silent.
//
// Every tenant is served fairly. Accepted events wait in one queue per
// tenant, and the sender takes them in turn, one event per tenant, into
// its batches, so a tenant's burst does not delay the others' events. A
// tenant may hold at most Config.TenantBuffer events of the buffer; past
// that, Emit for that tenant alone blocks or drops, while other tenants'
// calls go on. With Config.TenantRate set, the sender takes a tenant's
// events no faster than that rate: a flooding tenant's events wait in its
// share, and its Emit calls wait once the share is full, which pushes the
// flood back at its source instead of into the usage stream.
//
// Correct voids or amends events already stored: it publishes the
// corrections to the TENANTGUARD_CORRECTIONS stream, which the daemon
// applies one request at a time, and waits for the outcome on an _INBOX.
// subject (applied, duplicate or refused with a reason). It needs publish
// rights on tenantguard.corrections.<tenant_id> and subscribe rights on
// _INBOX.>.
//
// Register puts the emitter's own metrics (buffer depth, drops, invalid
// events, retries, publishes) on the service's Prometheus registry.
//
// Lifecycle: New, Emit from any goroutine, Flush to wait for delivery,
// Close to flush and stop. It imports nats.go, orbit.go's jetstreamext,
// client_golang and the event package only.
package emit
