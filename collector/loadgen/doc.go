// Package loadgen makes synthetic multi-tenant usage: tenants with very
// different volumes (a Zipf-like spread), realistic kinds, latencies, status
// codes and errors, a daily shape, and optionally one noisy tenant whose
// rate spikes by a factor for a while. A seeded Generator produces events;
// Run paces them through an emitter and reports progress.
package loadgen
