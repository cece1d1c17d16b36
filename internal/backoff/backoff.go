// Package backoff is tenantguard's one retry policy: waits that double from
// a minimum to a maximum between failed attempts, with jitter, cut short by
// the context. Retry runs the whole loop; Backoff gives the next wait to
// loops that select on other things too.
package backoff

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// Policy says how long to wait between attempts and how often to try.
type Policy struct {
	// Min is the first wait; each failure doubles it up to Max.
	Min, Max time.Duration
	// Retries bounds the retries after the first attempt; a negative
	// number retries until the context ends.
	Retries int
	// FullJitter waits a random duration in [0, wait) ("full jitter", for
	// many clients hitting one server); otherwise wait plus up to a
	// quarter more.
	FullJitter bool
}

// Backoff hands out the waits of a Policy, one failure at a time.
type Backoff struct {
	p   Policy
	cur time.Duration
}

// New returns the waits of p, starting at p.Min.
func New(p Policy) *Backoff { return &Backoff{p: p} }

// Next returns the wait after one more failure.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.p.Min
	} else {
		b.cur = min(2*b.cur, b.p.Max)
	}
	w := max(b.cur, time.Millisecond)
	if b.p.FullJitter {
		return rand.N(w) + time.Millisecond
	}
	return w + rand.N(w/4+1)
}

// Reset starts the waits over at p.Min, after a success.
func (b *Backoff) Reset() { b.cur = 0 }

// permanentError marks a failure retrying cannot fix.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent wraps err so Retry returns it at once.
func Permanent(err error) error { return permanentError{err} }

// Retry calls fn until it returns nil or a Permanent error, p.Retries run
// out, or ctx ends (then it returns the last error joined with ctx's).
// onRetry, when set, is told each failure that will be retried, with the
// attempt number and the wait before the next. It returns how many
// retries it made.
func Retry(ctx context.Context, p Policy, fn func(context.Context) error, onRetry func(attempt int, err error, wait time.Duration)) (int, error) {
	b := New(p)
	for retries := 0; ; retries++ {
		err := fn(ctx)
		if err == nil {
			return retries, nil
		}
		var perm permanentError
		if errors.As(err, &perm) || (p.Retries >= 0 && retries >= p.Retries) {
			return retries, err
		}
		if ctx.Err() != nil {
			return retries, errors.Join(err, ctx.Err())
		}
		wait := b.Next()
		if onRetry != nil {
			onRetry(retries+1, err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return retries, errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}
