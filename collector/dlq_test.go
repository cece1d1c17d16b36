package collector

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
)

type badCase struct{ file, subject, reason string }

func loadBadCorpus(t *testing.T) []badCase {
	t.Helper()
	dir := filepath.Join("event", "testdata", "bad")
	f, err := os.Open(filepath.Join(dir, "index.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []badCase
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p := strings.Split(line, "\t")
		if len(p) != 3 {
			t.Fatalf("index.tsv: bad line %q", line)
		}
		cases = append(cases, badCase{p[0], p[1], p[2]})
	}
	if len(cases) < 30 {
		t.Fatalf("corpus has %d cases, want the full set", len(cases))
	}
	return cases
}

// TestBadEventsGoToDLQWithReason publishes the whole bad-event corpus next
// to valid events: every bad one lands in the DLQ with its reason and
// original bytes, and only the valid ones reach ClickHouse.
func TestBadEventsGoToDLQWithReason(t *testing.T) {
	r := newRig(t, nil)
	r.start(t, testConfig())
	cases := loadBadCorpus(t)
	now := time.Now().UTC().Format(time.RFC3339Nano)
	bodies := map[string][]byte{}
	for _, c := range cases {
		b, err := os.ReadFile(filepath.Join("event", "testdata", "bad", c.file))
		if err != nil {
			t.Fatal(err)
		}
		b = []byte(strings.ReplaceAll(string(b), "__NOW__", now))
		bodies[c.file] = b
		m := nats.NewMsg(c.subject)
		m.Data = b
		m.Header.Set(event.HeaderMsgID, c.file)
		if _, err := r.js.PublishMsg(context.Background(), m); err != nil {
			t.Fatalf("%s: publish: %v", c.file, err)
		}
	}
	publish(t, r.js, "ok-", 0, 100, 10)
	waitRows(t, r.store, 100, 30*time.Second)

	dlq, err := r.js.Stream(context.Background(), event.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	cons, err := dlq.OrderedConsumer(context.Background(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]jetstream.Msg{}
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < len(cases) && time.Now().Before(deadline) {
		batch, err := cons.Fetch(len(cases), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			got[m.Headers().Get(event.HeaderOriginalMsgID)] = m
		}
	}
	for _, c := range cases {
		m, ok := got[c.file]
		if !ok {
			t.Errorf("%s: not in the DLQ", c.file)
			continue
		}
		reason := m.Headers().Get(event.HeaderReason)
		if code, _, _ := strings.Cut(reason, ": "); code != c.reason {
			t.Errorf("%s: reason %q, want %s", c.file, reason, c.reason)
		}
		if m.Subject() != "tenantguard.dlq."+c.reason {
			t.Errorf("%s: DLQ subject %s, want tenantguard.dlq.%s", c.file, m.Subject(), c.reason)
		}
		if s := m.Headers().Get(event.HeaderSubject); s != c.subject {
			t.Errorf("%s: Tenantguard-Subject %q, want %q", c.file, s, c.subject)
		}
		if string(m.Data()) != string(bodies[c.file]) {
			t.Errorf("%s: DLQ body differs from the original bytes", c.file)
		}
	}
	if len(got) != len(cases) {
		t.Errorf("DLQ holds %d messages, want %d", len(got), len(cases))
	}
}

// TestCostOverflowIsDeadLettered sends a valid event whose cost does not fit
// the events table's Decimal(18, 9) cost column. It must go to the DLQ with
// a reason, not fail its batch's insert forever and stall every tenant.
func TestCostOverflowIsDeadLettered(t *testing.T) {
	r := newRig(t, nil)
	r.start(t, testConfig())
	huge := event.Event{ID: "huge-1", TenantID: "greedy", Kind: "api_request", Time: time.Now().UTC(), Quantity: 1e14}
	m := nats.NewMsg(event.Subject(huge.TenantID, huge.Kind))
	m.Data = event.AppendJSON(nil, &huge)
	m.Header.Set(event.HeaderMsgID, huge.ID)
	if _, err := r.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	publish(t, r.js, "ok-", 0, 100, 10)
	waitRows(t, r.store, 100, 30*time.Second)

	dlq, err := r.js.Stream(context.Background(), event.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := dlq.GetLastMsgForSubject(context.Background(), event.DLQSubject(event.ReasonBadQuantity))
	if err != nil {
		t.Fatalf("no dead letter for the overflowing event: %v", err)
	}
	if id := msg.Header.Get(event.HeaderOriginalMsgID); id != huge.ID {
		t.Fatalf("dead letter id %q, want %q", id, huge.ID)
	}
	if reason := msg.Header.Get(event.HeaderReason); !strings.HasPrefix(reason, string(event.ReasonBadQuantity)+": ") {
		t.Fatalf("reason %q, want %s: ...", reason, event.ReasonBadQuantity)
	}
}
