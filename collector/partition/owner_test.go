package partition

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string // substring of the error; "" = valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"no partitions", func(c *Config) { c.Partitions = 0 }, "collector.partitions"},
		{"too many partitions", func(c *Config) { c.Partitions = 1025 }, "collector.partitions"},
		{"short lease", func(c *Config) { c.LeaseTTL = time.Second }, "collector.lease_ttl"},
		{"long lease", func(c *Config) { c.LeaseTTL = time.Hour }, "collector.lease_ttl"},
		{"replicas", func(c *Config) { c.Replicas = 0 }, "collector.stream.replicas"},
	}
	for _, tt := range tests {
		c := DefaultConfig()
		tt.edit(&c)
		err := c.Validate()
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestPreferenceDiffersBetweenReplicas(t *testing.T) {
	a := &Owner{cfg: DefaultConfig(), id: "host-00000001"}
	b := &Owner{cfg: DefaultConfig(), id: "host-00000002"}
	pa, pb := a.preference(), b.preference()
	if len(pa) != a.Slots() {
		t.Fatalf("got %d slots in the order, want %d", len(pa), a.Slots())
	}
	if pa[0] == pb[0] && pa[1] == pb[1] {
		t.Fatalf("both replicas would claim %v first", pa[:2])
	}
}

// recorder is a Slots that records which slots run, and fails the test if
// one is started twice or stopped while not running.
type recorder struct {
	t       *testing.T
	mu      sync.Mutex
	running map[int]bool
}

func (r *recorder) Start(_ context.Context, slots []int) map[int]error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, slot := range slots {
		if r.running[slot] {
			r.t.Errorf("slot %d started twice", slot)
		}
		r.running[slot] = true
	}
	return nil
}

func (r *recorder) Stop(_ context.Context, slot int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.running[slot] {
		r.t.Errorf("slot %d stopped while not running", slot)
	}
	delete(r.running, slot)
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.running)
}

func (r *recorder) has(slot int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.running[slot]
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLostLeaseStopsSlot: two owners split the slots; a lease taken from
// under its holder (deleted and claimed by someone else) makes the holder
// stop that slot, and cancelling one owner releases its slots to the other.
func TestLostLeaseStopsSlot(t *testing.T) {
	srv := testenv.NATS(t)
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Partitions: 5, LeaseTTL: 2 * time.Second, Replicas: 1}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	start := func() (*Owner, *recorder, context.CancelFunc, chan error) {
		o, err := New(cfg, Deps{JetStream: js, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		rec := &recorder{t: t, running: map[int]bool{}}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- o.Run(ctx, rec) }()
		return o, rec, cancel, done
	}
	a, recA, cancelA, doneA := start()
	defer func() { cancelA(); <-doneA }()
	b, recB, cancelB, doneB := start()
	waitFor(t, "3 slots each", 15*time.Second, func() bool { return recA.count() == 3 && recB.count() == 3 })

	slot := b.Held()[0]
	kv, err := js.KeyValue(context.Background(), Bucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(context.Background(), b.SlotKey(slot)); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(context.Background(), b.SlotKey(slot), []byte("intruder")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the robbed owner stops the slot", 10*time.Second, func() bool { return !recB.has(slot) })
	if recA.has(slot) {
		t.Fatalf("slot %d runs on %s while another holds its lease", slot, a.ID())
	}

	cancelB()
	if err := <-doneB; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := recB.count(); n != 0 {
		t.Fatalf("stopped owner still runs %d slots", n)
	}
	// The intruder never renews: once its lease expires, a takes every slot.
	waitFor(t, "the survivor holds every slot", 15*time.Second, func() bool { return recA.count() == cfg.Partitions+1 })
	if _, err := kv.Get(context.Background(), "members."+b.ID()); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("stopped owner's heartbeat: got %v, want deleted", err)
	}
}
