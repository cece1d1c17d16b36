// Package scaleout holds the end-to-end test of tenantguard scaled out:
// three `tenantguard run` replicas (separate processes, identical config
// apart from their listen addresses) on one NATS and a ClickHouse of two
// shards, with 20 tenants of steady traffic, one noisy tenant at 5x its
// rate and one tenant spending towards its monthly cap. The test SIGKILLs
// the replica that owns both, starts it again, and checks that every event
// is stored once, that each alert fires once with one decision at the rate
// of the tenant's whole traffic, that every spend threshold alerts once at
// its true spend, that nobody else is alerted or throttled, and that the
// billing export reconciles to the cent. There is no library code:
// everything lives in the _test.go files. See docs/scale-out.md.
package scaleout
