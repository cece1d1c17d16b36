package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestWaitsDoubleToMax(t *testing.T) {
	b := New(Policy{Min: 100 * time.Millisecond, Max: 400 * time.Millisecond})
	for i, want := range []time.Duration{100, 200, 400, 400} {
		want *= time.Millisecond
		if got := b.Next(); got < want || got > want+want/4 {
			t.Errorf("wait %d: got %v, want %v to %v", i, got, want, want+want/4)
		}
	}
	b.Reset()
	if got := b.Next(); got > 125*time.Millisecond {
		t.Errorf("after Reset: got %v, want about Min", got)
	}
	full := New(Policy{Min: time.Second, Max: time.Second, FullJitter: true})
	for range 100 {
		if got := full.Next(); got <= 0 || got > time.Second+time.Millisecond {
			t.Fatalf("full jitter: got %v, want in (0, 1s]", got)
		}
	}
}

func TestRetry(t *testing.T) {
	fast := Policy{Min: time.Millisecond, Max: 2 * time.Millisecond, Retries: -1}
	calls := 0
	n, err := Retry(context.Background(), fast, func(context.Context) error {
		if calls++; calls < 3 {
			return errors.New("not yet")
		}
		return nil
	}, nil)
	if err != nil || n != 2 || calls != 3 {
		t.Errorf("got %d retries, %d calls, %v; want 2, 3, nil", n, calls, err)
	}

	fast.Retries = 2
	var told []int
	n, err = Retry(context.Background(), fast, func(context.Context) error { return errors.New("down") },
		func(attempt int, _ error, _ time.Duration) { told = append(told, attempt) })
	if err == nil || n != 2 || len(told) != 2 {
		t.Errorf("bounded: got %d retries, %v, told %v; want 2 retries and the error", n, err, told)
	}

	bad := errors.New("4xx")
	n, err = Retry(context.Background(), Policy{Min: time.Millisecond, Max: time.Millisecond}, func(context.Context) error { return Permanent(bad) }, nil)
	if !errors.Is(err, bad) || n != 0 {
		t.Errorf("permanent: got %d retries, %v; want 0 and the error", n, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = Retry(ctx, Policy{Min: time.Hour, Max: time.Hour, Retries: -1}, func(context.Context) error { return errors.New("down") }, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ctx end: got %v, want the deadline", err)
	}
}
