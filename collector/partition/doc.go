// Package partition decides which slots of the usage stream this replica
// consumes. A slot is one partition of TENANTGUARD_USAGE (0 to n-1, see
// event.Partition), or the strays slot: messages still stored under
// tenantguard.usage.>.
//
// It takes a JetStream context and puts out calls to a Slots: Start when it
// has claimed a slot, Stop when it gives one up. Ownership is a lease in the
// KV bucket tenantguard_partitions, whose TTL is the lease TTL: each replica
// keeps a heartbeat key members.<replica-id> and the keys slot.<i> (or
// slot.strays) of the slots it holds. It claims a slot with Create, renews it
// every lease_ttl/3 with Update at the last revision, and releases it with
// Delete at the last revision. A replica aims at ceil(slots / live members)
// slots: it releases extras when members join and claims free slots, in an
// order of its own, when members leave or leases expire. The leases decide
// who should pull; the consumers' pinned-client priority group makes the
// server hand each slot's messages to one puller even while two replicas
// briefly disagree.
//
// Lifecycle: New, then Run (blocks until the context ends, then stops every
// held slot and releases its lease), then Close.
package partition
