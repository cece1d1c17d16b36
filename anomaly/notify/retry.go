package notify

import (
	"context"
	"time"

	"github.com/tenantguard/tenantguard/internal/backoff"
)

// maxBackoff caps one backoff sleep.
const maxBackoff = 30 * time.Second

// retrier retries a delivery with exponential backoff and full jitter: the
// n-th retry sleeps a random duration in [0, min(maxBackoff, base*2^n)).
type retrier struct {
	retries int           // retries after the first attempt
	base    time.Duration // first backoff ceiling
}

// permanent marks a failure that retrying cannot fix (a 4xx answer).
func permanent(err error) error { return backoff.Permanent(err) }

// do calls fn until it succeeds, fails permanently, runs out of retries or
// ctx ends. It returns how many retries it made and the last error.
func (r retrier) do(ctx context.Context, fn func(context.Context) error) (int, error) {
	return backoff.Retry(ctx, backoff.Policy{Min: r.base, Max: maxBackoff, Retries: max(r.retries, 0), FullJitter: true}, fn, nil)
}
