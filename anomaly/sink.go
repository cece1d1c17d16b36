package anomaly

import (
	"context"
	"sync"
)

// Sink receives alerts: one "firing" Alert when an episode starts and one
// "resolved" Alert with EndsAt when it ends. Send must not block detection:
// an implementation queues (bounded) and drops or counts on overflow.
type Sink interface {
	Send(ctx context.Context, a Alert)
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(ctx context.Context, a Alert)

// Send calls f.
func (f SinkFunc) Send(ctx context.Context, a Alert) { f(ctx, a) }

var _ Sink = SinkFunc(nil)

// Sinks sends every alert to each sink in turn; each must not block.
type Sinks []Sink

var _ Sink = Sinks(nil)

// Send sends a to every sink.
func (s Sinks) Send(ctx context.Context, a Alert) {
	for _, sink := range s {
		sink.Send(ctx, a)
	}
}

// Recorder is a Sink that keeps every alert in memory; replay and tests use
// it.
type Recorder struct {
	mu     sync.Mutex
	alerts []Alert
}

var _ Sink = (*Recorder)(nil)

// Send appends a.
func (r *Recorder) Send(_ context.Context, a Alert) {
	r.mu.Lock()
	r.alerts = append(r.alerts, a)
	r.mu.Unlock()
}

// Alerts returns a copy of the alerts received so far.
func (r *Recorder) Alerts() []Alert {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Alert(nil), r.alerts...)
}
