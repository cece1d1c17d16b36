// Package billing streams billing exports and per-tenant raw-event exports
// out of the ClickHouse events and corrections tables, and records what each
// billing export of a closed period covered.
//
// It takes a DB (a pooled ClickHouse connection and the database name; a
// *store.Store satisfies it) and writes to any io.Writer:
//
//   - Billing: one usage line per tenant, kind and unit price, then one
//     tenant_total line per tenant, as CSV with a stable header or as NDJSON.
//     Amounts are sum(cost) computed by ClickHouse in Decimal(38,9) and
//     carried as shopspring decimals, never as floats, so the export
//     reconciles to the cent with sum(cost) over the raw events.
//     Both net out the corrections table: a voided event is not billed, an
//     amended one is billed with its new quantity.
//   - Events: a tenant's raw events for a range, as NDJSON in wire format v1
//     (event.AppendJSON) or as CSV, for data portability, as billed (voids
//     left out, amendments applied) unless AsStored.
//   - Re-issued periods: a billing export of a closed period is recorded in
//     billing_exports once written whole; a later export of the period adds,
//     per tenant, adjustment lines against the latest recorded export that
//     billed it (or Request.AdjustFrom), for credit and debit notes. The
//     previous export's lines of the period and this export's record are
//     held in memory: one row per line, tenants x kinds x prices.
//
// Both stream: ClickHouse aggregates server-side, rows are read block by
// block and written through a fixed-size buffer, so client memory stays flat
// for any number of events. Only one tenant's usage lines (kinds x prices)
// are held at a time, to spread the cent rounding. Exporter holds no
// goroutines; it needs no Run and its Close is a no-op kept for symmetry.
// The columns are documented in docs/billing.md.
package billing
