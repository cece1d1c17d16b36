// Package guardloop holds the end-to-end test of the guard loop: a service
// process that embeds the limiter SDK and the emitter, the tenantguard
// daemon as a separate process (collector, anomaly detector, decision
// engine) against real NATS and ClickHouse, and a noisy tenant that goes to
// 5x its rate. The test checks that the noisy tenant, and only it, is
// throttled in the service and released after its spike, and measures the
// time from spike start to the first rejection. There is no library code:
// everything lives in the _test.go files. See docs/guardloop.md.
package guardloop
