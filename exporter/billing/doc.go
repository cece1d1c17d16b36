// Package billing streams billing exports and per-tenant raw-event exports
// out of the ClickHouse events table.
//
// It takes a DB (a pooled ClickHouse connection and the database name; a
// *store.Store satisfies it) and writes to any io.Writer:
//
//   - Billing: one usage line per tenant, kind and unit price, then one
//     tenant_total line per tenant, as CSV with a stable header or as NDJSON.
//     Amounts are sum(cost) computed by ClickHouse in Decimal(38,9) and
//     carried as shopspring decimals, never as floats, so the export
//     reconciles to the cent with sum(cost) over the raw events.
//   - Events: a tenant's raw events for a range, as NDJSON in wire format v1
//     (event.AppendJSON) or as CSV, for data portability.
//
// Both stream: ClickHouse aggregates server-side, rows are read block by
// block and written through a fixed-size buffer, so client memory stays flat
// for any number of events. Only one tenant's usage lines (kinds x prices)
// are held at a time, to spread the cent rounding. Exporter holds no
// goroutines; it needs no Run and its Close is a no-op kept for symmetry.
// The columns are documented in docs/billing.md.
package billing
