package notify

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// maxBackoff caps one backoff sleep.
const maxBackoff = 30 * time.Second

// backoff retries a delivery with exponential backoff and full jitter: the
// n-th retry sleeps a random duration in [0, min(maxBackoff, base*2^n)).
type backoff struct {
	retries int           // retries after the first attempt
	base    time.Duration // first backoff ceiling
}

// permanentError marks a failure that retrying cannot fix (a 4xx answer).
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

func permanent(err error) error { return permanentError{err} }

// do calls fn until it succeeds, fails permanently, runs out of retries or
// ctx ends. It returns how many retries it made and the last error.
func (b backoff) do(ctx context.Context, fn func(context.Context) error) (int, error) {
	retries := 0
	for {
		err := fn(ctx)
		if err == nil {
			return retries, nil
		}
		var perm permanentError
		if errors.As(err, &perm) || retries >= b.retries || ctx.Err() != nil {
			return retries, err
		}
		ceil := b.base << retries
		if ceil <= 0 || ceil > maxBackoff {
			ceil = maxBackoff
		}
		t := time.NewTimer(rand.N(ceil) + time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return retries, errors.Join(err, ctx.Err())
		case <-t.C:
		}
		retries++
	}
}
