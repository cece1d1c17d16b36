// Package limiter is the SDK that services embed to enforce tenantguard's
// decisions: per-tenant token buckets, per-tenant-and-integration circuit
// breakers, and HTTP middleware. It also defines the Decision type of the
// contract and the Publisher that writes decisions.
//
// It takes in decisions from the JetStream KV bucket tenantguard_decisions
// (key <tenant_id>, <tenant_id>.route.<base64url(route)> or
// <tenant_id>.integration.<base64url(name)>; value a JSON Decision) and puts
// out allow/deny answers: Allow, AllowN, Wait, Check, Breakers().Allow/Report/Do
// and Middleware.
//
// Hot path: Allow reads an immutable snapshot through one atomic load and
// one map lookup; a tenant without a decision and without a default limit
// costs nothing more. Decisions are applied by rebuilding only the touched
// tenants into a new snapshot; token buckets are reused across snapshots and
// changed in place with SetLimit/SetBurst. No global lock is taken, and no
// I/O happens on the hot path, whether or not NATS is reachable.
//
// Global split: every rate in a decision is cluster-wide. Each instance
// heartbeats <group>.<instance_id> in tenantguard_limiters and divides rate
// and burst by the number of live instances of its group (burst is floored,
// so the cluster-wide burst never exceeds the configured one).
//
// Integrity: writers sign each decision (Signer, Ed25519 over
// CanonicalBytes, which covers every field and the KV key); a limiter
// applies from the bucket only decisions that verify against
// Config.TrustedKeys (Verifier), ignoring and counting the rest by reason,
// and ignores deletes of live decisions. The checks run on the KV watch
// path, never in Allow.
//
// Lifecycle: New(cfg, deps), then Run(ctx) in a goroutine (blocks; returns
// nil on cancel), then Close (idempotent; deletes the presence key). The
// KV watch is re-created from the last revision after every reconnect,
// because the nats.go watcher does not recover by itself (nats.go #1777).
// The package imports nats.go, x/time/rate, client_golang and
// collector/event only.
package limiter
