// Package provision is the one place that creates and updates tenantguard's
// JetStream streams and KV buckets, and the way everyone else opens them.
//
// Only `tenantguard run` and `tenantguard migrate` provision: Stream and
// Bucket create what is missing and update what exists to the given config,
// except that they never lower an existing replica count. A stream that an
// operator scaled to R3 stays R3 when a daemon with the default config (1
// replica) starts; the call reports what it kept (Kept) so the caller can
// warn once.
//
// Every other command and the SDKs use a stream or bucket as it is:
// OpenStream and OpenBucket never create or change anything, and return a
// MissingError (errors.Is ErrMissing) that tells the operator what to run
// when it does not exist.
package provision
