// Package archtest holds the tests of the project's dependency rules: the
// libraries services embed (the limiter, the emitter, the event format,
// the HTTP meter and the Postgres tracer) keep a light dependency set, and
// only the Postgres tracer imports pgx. It has no code of its own.
package archtest
