// Package pricing turns usage into money. It takes a price book from config
// (a unit price per kind, per-plan overrides, tenant-to-plan assignments,
// monthly spend caps, a version and a currency) and prices each event with
// exact decimal arithmetic: cost = quantity × unit price, rounded to 9
// decimal places. The version is stored on every row, so a bill can always
// be traced to the prices that made it.
package pricing
