// Package event defines wire format v1 of a tenantguard usage event: the
// Event type, its validation rules, a fast allocation-light JSON decoder, and
// the NATS subject helpers.
//
// It takes in the raw bytes and subject of a JetStream message and puts out a
// validated Event, or a *ValidationError whose Reason is a stable code that
// the collector writes into the dead-letter header. It holds no state and
// imports nothing server-side, so services and every stage can import it.
//
// It also carries who work is done for through a context.Context
// (WithIdentity, WithTenant, IdentityFrom): the one place the HTTP
// middleware, the outbound transport and the Postgres tracer of the SDK
// put and find the tenant and user, since every producer imports this
// package already.
package event
