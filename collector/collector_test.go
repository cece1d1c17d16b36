package collector

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	testenv.Main(m)
}

// rig is a collector test setup: real NATS, real ClickHouse, a migrated
// database and a price book.
type rig struct {
	nats  *testenv.NATSServer
	nc    *nats.Conn
	js    jetstream.JetStream
	store *store.Store
	addr  string
	db    string
	book  *pricing.Book
}

func newRig(t *testing.T, ch *testenv.ClickHouseServer) *rig {
	t.Helper()
	r := &rig{nats: testenv.NATS(t)}
	if ch == nil {
		srv, db := testenv.ClickHouse(t)
		ch, r.db = srv, db
	} else {
		r.db = ch.NewDatabase(t)
	}
	r.addr = ch.Addr
	var err error
	r.nc, err = nats.Connect(r.nats.URL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.nc.Close)
	if r.js, err = jetstream.New(r.nc); err != nil {
		t.Fatal(err)
	}
	r.store = teststore.On(t, ch, r.db)
	pc := pricing.DefaultConfig()
	pc.Prices = map[string]string{"api_request": "0.0001", "ai_tokens": "0.000002"}
	if r.book, err = pricing.New(pc, nil); err != nil {
		t.Fatal(err)
	}
	if err := EnsureStreams(context.Background(), r.js, DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	return r
}

// start runs a collector in this process until the test ends.
func (r *rig) start(t *testing.T, cfg Config, obs ...Observer) *Collector {
	t.Helper()
	c, _ := r.startWithRegistry(t, cfg, obs...)
	return c
}

// startWithRegistry is start with the collector's metrics in a registry
// the test reads.
func (r *rig) startWithRegistry(t *testing.T, cfg Config, obs ...Observer) (*Collector, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := New(cfg, Deps{JetStream: r.js, Store: r.store, Pricer: r.book, Observers: obs, Registry: reg,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	testenv.RunStage(t, "collector", c.Run)
	return c, reg
}

func testConfig() Config {
	c := DefaultConfig()
	c.BatchMaxWait = 100 * time.Millisecond
	c.AckWait = 3 * time.Second
	c.RetryMax = time.Second
	c.LeaseTTL = 2 * time.Second
	return c
}

// publish sends n valid events for tenants t0..t(tenants-1) with ids
// prefix-i, waiting for every JetStream ack. It may run in a goroutine, so
// it reports failures with Errorf.
func publish(t *testing.T, js jetstream.JetStream, prefix string, from, n, tenants int) {
	t.Helper()
	now := time.Now().UTC()
	futures := make([]jetstream.PubAckFuture, 0, 1000)
	wait := func() {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				t.Errorf("publish: %v", err)
			case <-time.After(30 * time.Second):
				t.Error("publish: no ack after 30s")
			}
		}
		futures = futures[:0]
	}
	for i := from; i < from+n; i++ {
		e := event.Event{ID: prefix + strconv.Itoa(i), TenantID: "t" + strconv.Itoa(i%tenants), Kind: "api_request",
			Time: now, Quantity: 1, LatencyMs: float64(i % 100), StatusCode: 200}
		m := nats.NewMsg(event.Subject(e.TenantID, e.Kind))
		m.Data = event.AppendJSON(nil, &e)
		m.Header.Set(event.HeaderMsgID, e.ID)
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			t.Errorf("publish: %v", err) // may run in a goroutine: no Fatal
			return
		}
		if futures = append(futures, f); len(futures) == cap(futures) {
			wait()
		}
	}
	wait()
}

// counts returns count() and uniqExact(tenant_id, id) of events.
func counts(t *testing.T, st *store.Store) (rows, unique uint64) {
	t.Helper()
	err := st.Conn().QueryRow(context.Background(),
		"SELECT count(), uniqExact(tenant_id, id) FROM "+st.Table("events")).Scan(&rows, &unique)
	if err != nil {
		t.Fatal(err)
	}
	return rows, unique
}

// waitRows waits until events holds want rows, then checks there are no duplicates.
func waitRows(t *testing.T, st *store.Store, want uint64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var rows, unique uint64
	for time.Now().Before(deadline) {
		rows, unique = counts(t, st)
		if rows >= want {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // a duplicate would land after the last unique row
	rows, unique = counts(t, st)
	if rows != want || unique != want {
		t.Fatalf("got %d rows (%d unique), want %d: lost %d, duplicated %d", rows, unique, want, int64(want)-int64(unique), rows-unique)
	}
}

type countingObserver struct {
	mu   sync.Mutex
	n    int
	cost float64
}

func (o *countingObserver) Observe(e *event.Event, cost float64) {
	o.mu.Lock()
	o.n++
	o.cost += cost
	o.mu.Unlock()
}

func TestIngestStoresPricesAndObserves(t *testing.T) {
	r := newRig(t, nil)
	obs := &countingObserver{}
	r.start(t, testConfig(), obs)
	publish(t, r.js, "a-", 0, 5000, 50)
	publish(t, r.js, "a-", 0, 100, 50) // publisher retries inside the duplicate window
	waitRows(t, r.store, 5000, 30*time.Second)
	var cost string
	if err := r.store.Conn().QueryRow(context.Background(), "SELECT toString(sum(cost)) FROM "+r.store.Table("events")).Scan(&cost); err != nil {
		t.Fatal(err)
	}
	if cost != "0.5" && cost != "0.500000000" {
		t.Fatalf("sum(cost) = %s, want 0.5", cost)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.n != 5000 {
		t.Fatalf("observer saw %d events, want 5000", obs.n)
	}
}

func TestClickHouseOutageLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("20 s outage")
	}
	ch := testenv.NewClickHouseServer(t)
	r := newRig(t, ch)
	r.start(t, testConfig())
	publish(t, r.js, "o-", 0, 20000, 100)
	waitRows(t, r.store, 20000, 30*time.Second)
	ch.Stop()
	stopped := time.Now()
	publish(t, r.js, "o-", 20000, 30000, 100) // arrives while ClickHouse is down
	time.Sleep(20*time.Second - time.Since(stopped))
	if err := ch.Start(); err != nil {
		t.Fatal(err)
	}
	publish(t, r.js, "o-", 50000, 10000, 100)
	waitRows(t, r.store, 60000, 60*time.Second)
}

// lostReplyStore stores the first batch for real and then reports a
// failure, as when the connection breaks after ClickHouse committed.
type lostReplyStore struct {
	*store.Store
	mu     sync.Mutex
	failed bool
}

func (s *lostReplyStore) InsertEvents(ctx context.Context, rows []store.Row, at time.Time) error {
	if err := s.Store.InsertEvents(ctx, rows, at); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.failed {
		s.failed = true
		return errors.New("read: connection reset by peer (injected after the commit)")
	}
	return nil
}

func TestInsertRetryAfterLostReplyStoresOnce(t *testing.T) {
	r := newRig(t, nil)
	obs := &countingObserver{}
	c, err := New(testConfig(), Deps{JetStream: r.js, Store: &lostReplyStore{Store: r.store}, Pricer: r.book,
		Observers: []Observer{obs}, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	testenv.RunStage(t, "collector", c.Run)
	publish(t, r.js, "lr-", 0, 3000, 30)
	waitRows(t, r.store, 3000, 30*time.Second)
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.n != 3000 {
		t.Fatalf("observer saw %d events, want 3000", obs.n)
	}
}

// TestDeletedConsumerFailsRun: when the durable consumer disappears, Run
// must fail loudly instead of returning nil and leaving the daemon up with
// nothing ingested.
func TestDeletedConsumerFailsRun(t *testing.T) {
	r := newRig(t, nil)
	cfg := testConfig()
	c, err := New(cfg, Deps{JetStream: r.js, Store: r.store, Pricer: r.book,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	publish(t, r.js, "d-", 0, 100, 10)
	waitRows(t, r.store, 100, 30*time.Second)
	slot := event.Partition("t0", cfg.Partitions)
	if err := r.js.DeleteConsumer(ctx, event.UsageStream, SlotDurable(cfg.Durable, slot, cfg.Partitions)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Run returned nil after its consumer was deleted; want an error")
		}
		t.Logf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run still running 30 s after its consumer was deleted")
	}
	if c.Healthy() {
		t.Fatal("Healthy() = true after the consumer stopped")
	}
}

// TestDeletedConsumerDoesNotStoreTwice: an operator deletes the durable
// consumer; the collector's new one replays the retained stream, and none of
// it is stored again.
func TestDeletedConsumerDoesNotStoreTwice(t *testing.T) {
	r := newRig(t, nil)
	runOnce := func() {
		c, err := New(testConfig(), Deps{JetStream: r.js, Store: r.store, Pricer: r.book,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		waitRows(t, r.store, 3000, 30*time.Second)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	publish(t, r.js, "d-", 0, 3000, 30)
	runOnce()
	cfg := testConfig()
	for slot := 0; slot <= cfg.Partitions; slot++ {
		err := r.js.DeleteConsumer(context.Background(), event.UsageStream, SlotDurable(cfg.Durable, slot, cfg.Partitions))
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Fatal(err)
		}
	}
	runOnce() // waitRows fails on any duplicate
}

// TestStartsBeforeNATS: the collector waits for NATS instead of exiting,
// then ingests once NATS is up.
func TestStartsBeforeNATS(t *testing.T) {
	r := newRig(t, nil)
	r.nats.Shutdown()
	c, err := New(testConfig(), Deps{JetStream: r.js, Store: r.store, Pricer: r.book,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	time.Sleep(time.Second)
	select {
	case err := <-done:
		t.Fatalf("Run returned while NATS was down: %v", err)
	default:
	}
	if err := r.nats.Start(); err != nil {
		t.Fatal(err)
	}
	publish(t, r.js, "n-", 0, 500, 5)
	waitRows(t, r.store, 500, 30*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
