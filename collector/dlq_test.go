package collector

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strconv"
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

// TestWrongPartitionIsDeadLettered: events stored while the stream was
// partitioned by another count (collector.partitions changed without
// draining the backlog) sit in a partition that no longer matches their
// tenant. Those are dead-lettered as subject_mismatch, with the subject
// they were published to; those that still match are stored. Nothing is
// lost.
func TestWrongPartitionIsDeadLettered(t *testing.T) {
	r := newRig(t, nil)
	old := testConfig()
	old.Partitions = 4
	if err := EnsureStreams(context.Background(), r.js, old); err != nil {
		t.Fatal(err)
	}
	const tenants, n = 40, 400
	publish(t, r.js, "wp-", 0, n, tenants)
	cfg := testConfig() // 16 partitions: EnsureStreams in Run changes the transform
	match := 0
	for i := range n {
		tenant := "t" + strconv.Itoa(i%tenants)
		if event.Partition(tenant, 4) == event.Partition(tenant, cfg.Partitions) {
			match++
		}
	}
	if match == 0 || match == n {
		t.Fatalf("%d of %d events keep their partition: the test needs some of both", match, n)
	}
	r.start(t, cfg)
	waitRows(t, r.store, uint64(match), 30*time.Second)
	dlq, err := r.js.Stream(context.Background(), event.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	var info *jetstream.StreamInfo
	for {
		if info, err = dlq.Info(context.Background()); err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs >= uint64(n-match) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if info.State.Msgs != uint64(n-match) {
		t.Fatalf("got %d dead letters, want %d", info.State.Msgs, n-match)
	}
	m, err := dlq.GetMsg(context.Background(), info.State.FirstSeq)
	if err != nil {
		t.Fatal(err)
	}
	reason, subject := m.Header.Get(event.HeaderReason), m.Header.Get(event.HeaderSubject)
	if !strings.HasPrefix(reason, string(event.ReasonSubjectMismatch)+": ") || !strings.HasPrefix(subject, "tenantguard.usage.t") {
		t.Fatalf("dead letter: reason %q, subject %q; want subject_mismatch and the published tenantguard.usage.<tenant>.<kind>", reason, subject)
	}
}
