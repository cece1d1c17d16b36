// Package childproc runs a child process of tenantguard's own, such as
// `tenantguard run` under a benchmark or a test: with a clean environment
// (no inherited TENANTGUARD_* variable), its output in a log file, killed
// if this process dies, and stopped with SIGTERM, then SIGKILL.
//
// Lifecycle: Start, then Stop (idempotent; it returns the exit code).
// Exited, Tail and Grep read its state and output at any time.
package childproc
