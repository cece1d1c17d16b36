package emit

import (
	"context"
	"errors"
	"math"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

func setup(t *testing.T) (*testenv.NATSServer, *nats.Conn, jetstream.Stream) {
	t.Helper()
	srv := testenv.NATS(t)
	nc, err := nats.Connect(srv.URL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectBufSize(32<<20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	s, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: event.UsageStream, Subjects: []string{event.UsageSubjects}, Storage: jetstream.FileStorage,
		Duplicates: 2 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv, nc, s
}

func ev(i int) event.Event {
	return event.Event{ID: "e" + strconv.Itoa(i), TenantID: "acme", Kind: "api_request", Quantity: 1}
}

func streamMsgs(t *testing.T, s jetstream.Stream) uint64 {
	t.Helper()
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestEmitDeliversAndFlushes(t *testing.T) {
	_, nc, s := setup(t)
	e, err := New(nc, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10000; i++ {
		if err := e.Emit(context.Background(), ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Close(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := streamMsgs(t, s); got != 10000 {
		t.Fatalf("stream has %d messages, want 10000", got)
	}
	if st := e.Stats(); st.Published != 10000 || st.Buffered != 0 {
		t.Fatalf("stats %+v, want 10000 published and 0 buffered", st)
	}
	if err := e.Emit(context.Background(), ev(1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Emit after Close: got %v, want ErrClosed", err)
	}
}

func TestEmitSurvivesNATSRestart(t *testing.T) {
	srv, nc, s := setup(t)
	cfg := DefaultConfig()
	cfg.AckTimeout = time.Second
	e, err := New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const n = 30000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < n; i++ {
			if err := e.Emit(context.Background(), ev(i)); err != nil {
				t.Errorf("emit %d: %v", i, err)
				return
			}
			if i%1000 == 0 {
				time.Sleep(5 * time.Millisecond) // keep publishing across the restart
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	srv.Restart(t)
	wg.Wait()
	if err := e.Close(ctxT(t, 60*time.Second)); err != nil {
		t.Fatal(err)
	}
	st := e.Stats()
	if got := streamMsgs(t, s); got != n {
		t.Fatalf("stream has %d messages after restart, want %d (stats %+v)", got, n, st)
	}
	if st.Accepted != n || st.Published < n {
		t.Fatalf("stats %+v, want %d accepted and confirmed", st, n)
	}
	t.Logf("retries during restart: %d", st.Retries)
}

func TestDropPolicyCountsDrops(t *testing.T) {
	srv, nc, _ := setup(t)
	srv.Shutdown() // nothing can be confirmed, so the buffer fills
	cfg := DefaultConfig()
	cfg.BufferSize, cfg.Overflow = 100, Drop
	e, err := New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	dropped := 0
	for i := 0; i < 150; i++ {
		if err := e.Emit(context.Background(), ev(i)); errors.Is(err, ErrBufferFull) {
			dropped++
		}
	}
	if st := e.Stats(); dropped != 50 || st.Dropped != 50 || st.Buffered != 100 {
		t.Fatalf("dropped %d, stats %+v; want 50 dropped and 100 buffered", dropped, st)
	}
	err = e.Close(ctxT(t, 100*time.Millisecond))
	if err == nil {
		t.Fatal("Close reported no loss with 100 events unconfirmed")
	}
}

func TestBlockPolicyWaitsForContext(t *testing.T) {
	srv, nc, _ := setup(t)
	srv.Shutdown()
	cfg := DefaultConfig()
	cfg.BufferSize = 10
	e, _ := New(nc, cfg)
	for i := 0; i < 10; i++ {
		if err := e.Emit(context.Background(), ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	err := e.Emit(ctxT(t, 100*time.Millisecond), ev(11))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) < 90*time.Millisecond {
		t.Fatalf("got %v after %s, want a deadline error after blocking", err, time.Since(start))
	}
}

func TestEmitRejectsInvalid(t *testing.T) {
	_, nc, _ := setup(t)
	e, _ := New(nc, DefaultConfig())
	defer e.Close(context.Background())
	bad := []event.Event{
		{TenantID: "a.b", Kind: "api_request"},
		{TenantID: "acme", Kind: "Bad-Kind"},
		{TenantID: "acme", Kind: "api_request", Quantity: -1},
		{TenantID: "acme", Kind: "api_request", Quantity: 1, LatencyMs: math.NaN()},
		{TenantID: "acme", Kind: "api_request", Quantity: 1, Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{TenantID: "acme", Kind: "api_request", Quantity: 1e308},
		{TenantID: "acme", Kind: "api_request", Quantity: 1, LatencyMs: 1e308},
		{ID: "id\nwith a break", TenantID: "acme", Kind: "api_request", Quantity: 1},
		{ID: " padded", TenantID: "acme", Kind: "api_request", Quantity: 1},
	}
	for _, b := range bad {
		if err := e.Emit(context.Background(), b); err == nil {
			t.Errorf("Emit(%+v) accepted an invalid event", b)
		}
	}
	if st := e.Stats(); st.Invalid != uint64(len(bad)) {
		t.Fatalf("invalid count %d, want %d", st.Invalid, len(bad))
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func BenchmarkEmit(b *testing.B) {
	srv := testenv.NATS(b)
	nc, _ := nats.Connect(srv.URL)
	defer nc.Close()
	js, _ := jetstream.New(nc)
	_, _ = js.CreateStream(context.Background(), jetstream.StreamConfig{Name: event.UsageStream, Subjects: []string{event.UsageSubjects}})
	e, _ := New(nc, DefaultConfig())
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = e.Emit(context.Background(), ev(i))
	}
	_ = e.Close(context.Background())
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// TestEmitRacingCloseIsNeverSilent: Emit calls racing Close either fail
// or are published; an Emit that returned nil is never left behind.
func TestEmitRacingCloseIsNeverSilent(t *testing.T) {
	_, nc, _ := setup(t)
	for round := 0; round < 20; round++ {
		e, err := New(nc, DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		var ok sync.WaitGroup
		var mu sync.Mutex
		accepted := 0
		for g := 0; g < 4; g++ {
			ok.Add(1)
			go func(g int) {
				defer ok.Done()
				for i := 0; ; i++ {
					if err := e.Emit(context.Background(), ev(round*1_000_000+g*100_000+i)); err != nil {
						return
					}
					mu.Lock()
					accepted++
					mu.Unlock()
				}
			}(g)
		}
		time.Sleep(time.Duration(round%5) * time.Millisecond)
		if err := e.Close(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		ok.Wait()
		st := e.Stats()
		if int(st.Published) != accepted {
			t.Fatalf("round %d: Emit returned nil %d times, %d published", round, accepted, st.Published)
		}
	}
}

// TestOversizeEventFreesItsSlot: an event over 8 KiB is refused as invalid
// and gives its buffer slot back.
func TestOversizeEventFreesItsSlot(t *testing.T) {
	_, nc, _ := setup(t)
	cfg := DefaultConfig()
	cfg.BufferSize = 1
	e, _ := New(nc, cfg)
	defer e.Close(context.Background())
	big := ev(1)
	big.Attrs = map[string]string{"blob": string(make([]byte, event.MaxSize))}
	if err := e.Emit(context.Background(), big); err == nil {
		t.Fatal("an event over 8 KiB was accepted")
	}
	if st := e.Stats(); st.Invalid != 1 || st.Buffered != 0 {
		t.Fatalf("stats %+v, want 1 invalid and the slot free", st)
	}
	if err := e.Emit(ctxT(t, time.Second), ev(2)); err != nil {
		t.Fatalf("next event: %v, want the freed slot", err)
	}
}
