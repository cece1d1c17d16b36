// Package api serves tenantguard's versioned JSON API under /api/v1, plus
// /healthz and /readyz, on the api.listen address.
//
// It takes a Config (listener, bearer-token hashes with roles, range and page
// bounds), a DB (a *store.Store satisfies it) and the billing exporter, and
// answers reads of the ClickHouse tables: a tenant's usage and cost from
// usage_1m, cost per tenant, anomalies, decisions, pg findings, the billing
// export and a tenant's raw events (both streamed).
//
// Auth: every /api/v1 request needs "Authorization: Bearer <token>". The
// token is hashed with SHA-256 and compared in constant time with every
// configured hash. Roles: admin (everything), billing (usage and cost of every
// tenant, the billing export), tenant:<id> (that tenant's own data). No token
// or an unknown one gets 401, a known token without the right gets 403. Tokens
// are never logged; the log names the token by its configured name.
//
// Every parameter is validated before a query runs (bad → 400 with a JSON
// {"error": ...}); tenant ids and every other user value reach ClickHouse only
// as bound ? parameters.
//
// The streamed exports are bounded: at most Config.MaxConcurrentExports run
// at once (Config.MaxConcurrentExportsPerToken per token), one more gets 429
// with Retry-After; each write to the client has a deadline of
// Config.ExportWriteTimeout, so a client that stops reading is cut off and
// its ClickHouse connection released.
//
// Lifecycle: New binds the listener, Run serves until its context ends and
// then shuts down gracefully, Close stops at once and is idempotent.
// The endpoints are documented in docs/api.md.
package api
