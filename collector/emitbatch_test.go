package collector

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/event"
)

// TestFastBatchEmitterThroughCollector: the usage stream EnsureStreams
// makes takes the emitter's fast batches. Every event the emitter confirms
// ends up once in ClickHouse, or in the DLQ with its reason when the
// collector refuses it: a fast batch changes none of the outcomes.
func TestFastBatchEmitterThroughCollector(t *testing.T) {
	r := newRig(t, nil)
	r.start(t, testConfig())
	ctx := context.Background()
	s, err := r.js.Stream(ctx, event.UsageStream)
	if err != nil {
		t.Fatal(err)
	}
	if !s.CachedInfo().Config.AllowBatchPublish {
		t.Fatal("EnsureStreams left allow_batched off on the usage stream")
	}

	em, err := emit.New(r.nc, emit.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	now := time.Now().UTC()
	dead := map[string]event.Reason{
		"undeclared-kind": event.ReasonUnknownKind, // a well-formed kind the price book does not know
		"too-old":         event.ReasonTooLate,     // older than collector.lateness
	}
	for i := 0; i < n; i++ {
		e := event.Event{ID: "fb-" + strconv.Itoa(i), TenantID: "t" + strconv.Itoa(i%50), Kind: "api_request", Time: now, Quantity: 1}
		switch i {
		case n / 3:
			e.ID, e.Kind = "undeclared-kind", "mystery_units"
		case 2 * n / 3:
			e.ID, e.Time = "too-old", now.Add(-30*24*time.Hour)
		}
		if err := em.Emit(ctx, e); err != nil {
			t.Fatalf("emit %d: %v", i, err)
		}
	}
	if err := em.Close(ctxTimeout(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	if st := em.Stats(); !st.FastBatch || st.Published != n || st.Buffered != 0 {
		t.Fatalf("emitter stats %+v, want %d confirmed through fast batches", st, n)
	}

	waitRows(t, r.store, n-uint64(len(dead)), 30*time.Second)
	dlq, err := r.js.Stream(ctx, event.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := dlq.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]event.Reason{}
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(dead) && time.Now().Before(deadline) {
		batch, err := cons.Fetch(10, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			code, _, _ := strings.Cut(m.Headers().Get(event.HeaderReason), ": ")
			got[m.Headers().Get(event.HeaderOriginalMsgID)] = event.Reason(code)
		}
	}
	for id, want := range dead {
		if got[id] != want {
			t.Errorf("%s: dead-lettered with %q, want %q", id, got[id], want)
		}
	}
	if len(got) != len(dead) {
		t.Errorf("DLQ holds %d events (%v), want %d", len(got), got, len(dead))
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
