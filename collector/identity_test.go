package collector

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

func publishRaw(t *testing.T, r *rig, subject, msgID string, body []byte) uint64 {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = body
	if msgID != "" {
		m.Header.Set(event.HeaderMsgID, msgID)
	}
	ack, err := r.js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return ack.Sequence
}

func validBody(id, tenant string, qty float64) []byte {
	e := event.Event{ID: id, TenantID: tenant, Kind: event.KindAPIRequest, Time: time.Now().UTC(), Quantity: qty}
	return event.AppendJSON(nil, &e)
}

// TestDeadLettersCannotBeDeduplicatedAway: a publisher picks the header id
// that an earlier dead letter of someone else was keyed by. Every bad
// message must still land in the DLQ, and the dlq counter must equal the
// DLQ's message count.
func TestDeadLettersCannotBeDeduplicatedAway(t *testing.T) {
	r := newRig(t, nil)
	_, reg := r.startWithRegistry(t, testConfig())
	subject := event.Subject("acme", event.KindAPIRequest)
	first := publishRaw(t, r, subject, "", []byte(`{"broken`))
	// The old scheme keyed a header-less dead letter by "seq-<N>": these
	// collide with it and with each other's stream sequence.
	publishRaw(t, r, subject, fmt.Sprintf("seq-%d", first), []byte(`{"also broken`))
	publishRaw(t, r, subject, fmt.Sprintf("%s:%d", event.UsageStream, first), []byte(`not json`))
	publishRaw(t, r, subject, "", []byte(`{"id":"x"}`))
	publish(t, r.js, "ok-", 0, 10, 2)
	waitRows(t, r.store, 10, 30*time.Second)

	dlq, err := r.js.Stream(context.Background(), event.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlq.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 4 {
		t.Errorf("DLQ holds %d messages, want 4", info.State.Msgs)
	}
	counted := testenv.MetricValue(t, reg, "tenantguard_collector_events_total", "result", "dlq")
	if counted != float64(info.State.Msgs) {
		t.Errorf("events_total{result=dlq} = %v, DLQ holds %d", counted, info.State.Msgs)
	}
	msg, err := dlq.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := msg.Header.Get(event.HeaderMsgID), fmt.Sprintf("%s:%d", event.UsageStream, first); got != want {
		t.Errorf("dead letter id: got %q, want %q", got, want)
	}
}

// TestHeaderBodyIDMismatchIsDeadLettered: the body id is the identity. A
// header id that differs would let JetStream drop a different event as its
// duplicate, so the message is dead-lettered with reason id_mismatch.
func TestHeaderBodyIDMismatchIsDeadLettered(t *testing.T) {
	r := newRig(t, nil)
	r.start(t, testConfig())
	subject := event.Subject("acme", event.KindAPIRequest)
	publishRaw(t, r, subject, "other-id", validBody("body-id", "acme", 1))
	publish(t, r.js, "ok-", 0, 10, 2)
	waitRows(t, r.store, 10, 30*time.Second)
	dlq, err := r.js.Stream(context.Background(), event.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := dlq.GetLastMsgForSubject(context.Background(), event.DLQSubject(event.ReasonIDMismatch))
	if err != nil {
		t.Fatalf("no id_mismatch dead letter: %v", err)
	}
	if reason := msg.Header.Get(event.HeaderReason); !strings.HasPrefix(reason, "id_mismatch: ") {
		t.Errorf("reason %q, want id_mismatch: ...", reason)
	}
	if got := msg.Header.Get(event.HeaderOriginalMsgID); got != "other-id" {
		t.Errorf("%s: got %q, want the publisher's header id other-id", event.HeaderOriginalMsgID, got)
	}
}

// TestEventWithoutHeaderIsStoredOnce publishes one event twice without a
// Nats-Msg-Id (so JetStream cannot deduplicate it), in two batches and with
// different quantities. It is stored once, with the first quantity.
func TestEventWithoutHeaderIsStoredOnce(t *testing.T) {
	r := newRig(t, nil)
	_, reg := r.startWithRegistry(t, testConfig())
	subject := event.Subject("acme", event.KindAPIRequest)
	publishRaw(t, r, subject, "", validBody("no-header-1", "acme", 3))
	waitRows(t, r.store, 1, 30*time.Second)
	publishRaw(t, r, subject, "", validBody("no-header-1", "acme", 7))
	publish(t, r.js, "ok-", 0, 10, 2)
	waitRows(t, r.store, 11, 30*time.Second)
	var qty float64
	if err := r.store.Conn().QueryRow(context.Background(),
		"SELECT sum(quantity) FROM "+r.store.Table("events")+" WHERE id = 'no-header-1'").Scan(&qty); err != nil {
		t.Fatal(err)
	}
	if qty != 3 {
		t.Errorf("stored quantity %v, want 3 (the first copy only)", qty)
	}
	if got := testenv.MetricValue(t, reg, "tenantguard_collector_duplicates_total", "reason", "republish"); got != 1 {
		t.Errorf("duplicates_total{reason=republish} = %v, want 1", got)
	}
}

// TestResendAfterDuplicateWindowStoredOnce re-sends the same messages (same
// Nats-Msg-Id, same bytes) after JetStream's duplicate window has passed,
// first to the collector that stored them, then, after it stopped, to
// another one (a restart, or another replica). Every id is stored once and
// each re-send is counted as a republish.
func TestResendAfterDuplicateWindowStoredOnce(t *testing.T) {
	r := newRig(t, nil)
	cfg := testConfig()
	cfg.Stream.DuplicateWindow = 500 * time.Millisecond
	cfg.Stream.MaxAge = time.Hour
	const n = 2000
	msgs := make([]*nats.Msg, n)
	now := time.Now().UTC()
	for i := range msgs {
		e := event.Event{ID: fmt.Sprintf("resend-%d", i), TenantID: fmt.Sprintf("t%d", i%50), Kind: event.KindAPIRequest,
			Time: now.Add(-time.Duration(i) * time.Second), Quantity: 1}
		msgs[i] = nats.NewMsg(event.Subject(e.TenantID, e.Kind))
		msgs[i].Data = event.AppendJSON(nil, &e)
		msgs[i].Header.Set(event.HeaderMsgID, e.ID)
	}
	send := func() {
		t.Helper()
		for _, m := range msgs {
			if _, err := r.js.PublishMsg(context.Background(), m); err != nil {
				t.Fatal(err)
			}
		}
	}

	ctx, stop := context.WithCancel(context.Background())
	reg := prometheus.NewRegistry()
	first, err := New(cfg, Deps{JetStream: r.js, Store: r.store, Pricer: r.book, Registry: reg,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	send()
	waitRows(t, r.store, n, 30*time.Second)
	time.Sleep(time.Second) // past the duplicate window
	send()
	waitRows(t, r.store, n, 30*time.Second)
	if got := testenv.MetricValue(t, reg, "tenantguard_collector_duplicates_total", "reason", "republish"); got != n {
		t.Errorf("first collector: duplicates_total{reason=republish} = %v, want %d", got, n)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	_, reg2 := r.startWithRegistry(t, cfg)
	time.Sleep(time.Second)
	send()
	publish(t, r.js, "after-", 0, 10, 2)
	waitRows(t, r.store, n+10, 30*time.Second)
	if got := testenv.MetricValue(t, reg2, "tenantguard_collector_duplicates_total", "reason", "republish"); got != n {
		t.Errorf("second collector: duplicates_total{reason=republish} = %v, want %d", got, n)
	}
	var minuteCount uint64
	if err := r.store.Conn().QueryRow(context.Background(),
		"SELECT sum(count) FROM "+r.store.Table("usage_1m")+" WHERE tenant_id LIKE 't%'").Scan(&minuteCount); err != nil {
		t.Fatal(err)
	}
	if minuteCount != n+10 {
		t.Errorf("usage_1m counts %d events, want %d", minuteCount, n+10)
	}
}
