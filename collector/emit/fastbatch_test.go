package emit

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

// setupBatched is setup with the usage stream's allow_batched flag as
// given.
func setupBatched(t *testing.T, allow bool) (*testenv.NATSServer, *nats.Conn, jetstream.Stream) {
	t.Helper()
	srv, nc, s := setup(t)
	cfg := s.CachedInfo().Config
	cfg.AllowBatchPublish = allow
	js, _ := jetstream.New(nc)
	s, err := js.UpdateStream(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return srv, nc, s
}

// spread is ev(i) over many tenants, so a batch spans many subjects.
func spread(i int) event.Event {
	e := ev(i)
	e.TenantID = "t" + strconv.Itoa(i%500)
	return e
}

func emitAll(t *testing.T, e *Emitter, from, to int, mk func(int) event.Event) {
	t.Helper()
	for i := from; i < to; i++ {
		if err := e.Emit(context.Background(), mk(i)); err != nil {
			t.Fatalf("emit %d: %v", i, err)
		}
	}
}

func TestFastBatchStoresEveryEventOnce(t *testing.T) {
	_, nc, s := setupBatched(t, true)
	e, err := New(nc, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := e.Register(reg); err != nil {
		t.Fatal(err)
	}
	const n = 25000
	emitAll(t, e, 0, n, spread)
	if err := e.Close(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	st := e.Stats()
	if !st.FastBatch {
		t.Fatalf("stats %+v: want the fast batch path on a stream with allow_batched", st)
	}
	if got := testenv.MetricSums(t, reg)["tenantguard_emitter_fast_batch"]; got != 1 {
		t.Errorf("tenantguard_emitter_fast_batch = %v, want 1", got)
	}
	if got := streamMsgs(t, s); got != n {
		t.Fatalf("stream has %d messages, want %d", got, n)
	}
	if st.Published != n || st.Buffered != 0 || st.Retries != 0 {
		t.Fatalf("stats %+v, want %d published, 0 buffered, 0 retries", st, n)
	}
	// Every message keeps the wire contract: subject, Nats-Msg-Id, body.
	for _, seq := range []uint64{1, n / 2, n} {
		m, err := s.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		var got event.Event
		if verr := event.Decode(m.Data, &got); verr != nil {
			t.Fatalf("message %d: %v", seq, verr)
		}
		if want := event.Subject(got.TenantID, got.Kind); m.Subject != want {
			t.Errorf("message %d: subject %q, want %q", seq, m.Subject, want)
		}
		if id := m.Header.Get(event.HeaderMsgID); id != got.ID {
			t.Errorf("message %d: Nats-Msg-Id %q, want the event id %q", seq, id, got.ID)
		}
	}
}

// TestFastBatchDeduplicates: an id sent twice inside one batch, and a
// whole run sent again by a second emitter, are stored once; the emitter
// still confirms every event it was given.
func TestFastBatchDeduplicates(t *testing.T) {
	_, nc, s := setupBatched(t, true)
	e, err := New(nc, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	twice := func(i int) event.Event { return spread(i / 2) } // e0 e0 e1 e1 ...
	emitAll(t, e, 0, 4000, twice)
	if err := e.Close(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if st := e.Stats(); !st.FastBatch || st.Published != 4000 {
		t.Fatalf("stats %+v, want 4000 confirmed through fast batches", st)
	}
	if got := streamMsgs(t, s); got != 2000 {
		t.Fatalf("inside a batch: stream has %d messages, want 2000", got)
	}

	again, err := New(nc, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	emitAll(t, again, 0, 3000, spread) // 2000 seen, 1000 new
	if err := again.Close(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if st := again.Stats(); st.Published != 3000 {
		t.Fatalf("resend: stats %+v, want 3000 confirmed", st)
	}
	if got := streamMsgs(t, s); got != 3000 {
		t.Fatalf("resend: stream has %d messages, want 3000", got)
	}
}

// TestFastBatchSurvivesRestart: across a server restart every event is
// stored exactly once and confirmed once.
func TestFastBatchSurvivesRestart(t *testing.T) {
	srv, nc, s := setupBatched(t, true)
	cfg := DefaultConfig()
	cfg.AckTimeout = time.Second
	e, err := New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Publish without pause across the restart, so batches are open when
	// the server goes away.
	var stop atomic.Bool
	var wg sync.WaitGroup
	n := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ; !stop.Load() || n < 20000; n++ {
			if err := e.Emit(context.Background(), spread(n)); err != nil {
				t.Errorf("emit %d: %v", n, err)
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	srv.Restart(t)
	time.Sleep(100 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if err := e.Close(ctxT(t, 60*time.Second)); err != nil {
		t.Fatal(err)
	}
	st := e.Stats()
	if got := streamMsgs(t, s); got != uint64(n) {
		t.Fatalf("stream has %d messages after restart, want %d (stats %+v)", got, n, st)
	}
	if st.Published != uint64(n) || st.Buffered != 0 {
		t.Fatalf("stats %+v, want %d confirmed once each", st, n)
	}
	t.Logf("batches broken by the restart: last error %q, %d events sent again", st.LastError, st.Retries)
	if !st.FastBatch {
		t.Fatalf("stats %+v: want fast batches again after the reconnect", st)
	}
}

// TestFastBatchResendsRefusedRest: the stream refuses events mid-batch (it
// is full and discards new ones), so the server ends the batch early. The
// emitter confirms what was stored, sends the rest again with the same ids
// (through async publish once batches keep failing) until the stream takes
// them, and every event is stored exactly once.
func TestFastBatchResendsRefusedRest(t *testing.T) {
	_, nc, s := setupBatched(t, true)
	limit := func(maxMsgs int64) {
		t.Helper()
		info, err := s.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		cfg := info.Config
		cfg.MaxMsgs, cfg.Discard = maxMsgs, jetstream.DiscardNew
		js, _ := jetstream.New(nc)
		if _, err := js.UpdateStream(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	limit(700) // inside the first batch, past its first flow ack
	cfg := DefaultConfig()
	cfg.RetryWait = 20 * time.Millisecond
	e, err := New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	emitAll(t, e, 0, n, spread)
	deadline := time.Now().Add(10 * time.Second)
	for e.Stats().Retries == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	st := e.Stats()
	if st.Retries == 0 || st.Published >= n {
		t.Fatalf("stats %+v with the stream full: want retries and events unconfirmed", st)
	}
	if st.Published > 700 {
		t.Fatalf("stats %+v: %d confirmed, but the stream holds at most 700", st, st.Published)
	}
	// Batches that keep failing send the emitter to async publish for a while.
	for e.Stats().FastBatch && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := e.Stats(); st.FastBatch {
		t.Fatalf("stats %+v: still on fast batches after they kept failing", st)
	}
	limit(-1)
	if err := e.Close(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	st = e.Stats()
	if got := streamMsgs(t, s); got != n {
		t.Fatalf("stream has %d messages, want %d (stats %+v)", got, n, st)
	}
	if st.Published != n || st.Buffered != 0 {
		t.Fatalf("stats %+v, want %d confirmed", st, n)
	}
}

// TestFastBatchFallsBackWithoutFlag: on a stream without allow_batched the
// emitter publishes async at once, instead of hanging a batch for its ack
// timeout; and when the flag goes off under a running emitter, the failed
// batch makes it ask again and fall back, losing nothing.
func TestFastBatchFallsBackWithoutFlag(t *testing.T) {
	t.Run("flag off from the start", func(t *testing.T) {
		_, nc, s := setupBatched(t, false)
		e, err := New(nc, DefaultConfig()) // AckTimeout 5s: a hang would show
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		emitAll(t, e, 0, 2000, spread)
		if err := e.Close(ctxT(t, 3*time.Second)); err != nil {
			t.Fatalf("close after %s: %v", time.Since(start), err)
		}
		if st := e.Stats(); st.FastBatch || st.Published != 2000 || st.Retries != 0 {
			t.Fatalf("stats %+v, want 2000 published async without retries", st)
		}
		if got := streamMsgs(t, s); got != 2000 {
			t.Fatalf("stream has %d messages, want 2000", got)
		}
	})
	t.Run("flag turned off while running", func(t *testing.T) {
		_, nc, s := setupBatched(t, true)
		cfg := DefaultConfig()
		cfg.AckTimeout = 500 * time.Millisecond
		e, err := New(nc, cfg)
		if err != nil {
			t.Fatal(err)
		}
		emitAll(t, e, 0, 1000, spread)
		if err := e.Flush(ctxT(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		if !e.Stats().FastBatch {
			t.Fatal("want fast batches while the flag is on")
		}
		setupFlag(t, nc, s, false)
		start := time.Now()
		emitAll(t, e, 1000, 2000, spread)
		if err := e.Close(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("fallback took %s, want about one ack timeout", d)
		}
		if st := e.Stats(); st.FastBatch || st.Published != 2000 {
			t.Fatalf("stats %+v, want async after the flag went off, 2000 published", st)
		}
		if got := streamMsgs(t, s); got != 2000 {
			t.Fatalf("stream has %d messages, want 2000", got)
		}
	})
}

func setupFlag(t *testing.T, nc *nats.Conn, s jetstream.Stream, allow bool) {
	t.Helper()
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	cfg.AllowBatchPublish = allow
	js, _ := jetstream.New(nc)
	if _, err := js.UpdateStream(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
}

// TestFastBatchLingerConfirmsLightTraffic: one event alone is confirmed
// within a few Lingers, not held for a batch to fill.
func TestFastBatchLingerConfirmsLightTraffic(t *testing.T) {
	_, nc, s := setupBatched(t, true)
	e, err := New(nc, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(context.Background())
	emitAll(t, e, 0, 1, spread) // the first event also settles the path
	if err := e.Flush(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		start := time.Now()
		emitAll(t, e, i, i+1, spread)
		if err := e.Flush(ctxT(t, time.Second)); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if d := time.Since(start); d > 200*time.Millisecond {
			t.Errorf("event %d confirmed after %s, want within 200ms", i, d)
		}
	}
	if st := e.Stats(); !st.FastBatch || st.Published != 6 {
		t.Fatalf("stats %+v, want 6 published through fast batches", st)
	}
	if got := streamMsgs(t, s); got != 6 {
		t.Fatalf("stream has %d messages, want 6", got)
	}
}

// TestFastBatchCloseDrains: Close confirms everything buffered, from many
// goroutines at once, before it returns.
func TestFastBatchCloseDrains(t *testing.T) {
	_, nc, s := setupBatched(t, true)
	cfg := DefaultConfig()
	cfg.BufferSize = 5000 // smaller than the total: Emit blocks on a full buffer
	e, err := New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 4, 10000
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			emitAll(t, e, w*each, (w+1)*each, spread)
		}(w)
	}
	wg.Wait()
	if err := e.Close(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := streamMsgs(t, s); got != workers*each {
		t.Fatalf("stream has %d messages, want %d", got, workers*each)
	}
	if st := e.Stats(); st.Published != workers*each || st.Buffered != 0 {
		t.Fatalf("stats %+v, want %d published and nothing buffered", st, workers*each)
	}
}

func TestVersionAtLeast(t *testing.T) {
	for _, c := range []struct {
		v    string
		want bool
	}{
		{"2.14.0", true}, {"2.15.2", true}, {"3.0.0", true}, {"2.14.0-beta.1", true},
		{"2.13.9", false}, {"2.10.22", false}, {"1.99.0", false}, {"", false}, {"x.y", false},
	} {
		if got := versionAtLeast(c.v, 2, 14); got != c.want {
			t.Errorf("versionAtLeast(%q, 2, 14): got %v, want %v", c.v, got, c.want)
		}
	}
}

// BenchmarkPublishPaths puts b.N events of about 200 bytes over 10,000
// tenant subjects through the async path and through fast batches, on the
// same server and stream, in the order async, fast, fast, async (half of
// b.N each time) so a drift in the machine's load favours neither, and
// reports both rates and their ratio.
func BenchmarkPublishPaths(b *testing.B) {
	srv := testenv.NATS(b)
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: event.UsageStream, Subjects: []string{event.UsageSubjects},
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute, AllowBatchPublish: true})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	run := func(batch int, prefix string, from, to int) time.Duration {
		if err := s.Purge(context.Background()); err != nil {
			b.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.Batch = batch
		cfg.Logger = slog.New(slog.DiscardHandler)
		e, err := New(nc, cfg)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for i := from; i < to; i++ {
			ev := event.Event{ID: prefix + strconv.Itoa(i), TenantID: "t" + strconv.Itoa(i%10000), Kind: "api_request", Time: now,
				Quantity: 1, LatencyMs: 12.5, StatusCode: 200, Route: "GET /v1/invoices", Service: "bench", UserID: "u_42"}
			if err := e.Emit(context.Background(), ev); err != nil {
				b.Fatal(err)
			}
		}
		if err := e.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
		if batch > 0 && to > from && !e.Stats().FastBatch {
			b.Fatal("fast batches were not used")
		}
		return time.Since(start)
	}
	b.ReportAllocs()
	b.ResetTimer()
	half := b.N / 2
	tAsync := run(0, "a", 0, half)
	tFast := run(1000, "f", 0, half)
	tFast += run(1000, "f", half, b.N)
	tAsync += run(0, "a", half, b.N)
	async, fast := float64(b.N)/tAsync.Seconds(), float64(b.N)/tFast.Seconds()
	b.ReportMetric(async, "async-events/s")
	b.ReportMetric(fast, "fast-events/s")
	b.ReportMetric(fast/async, "fast/async")
}

// TestFastBatchAfterStreamAppears: an emitter started before the usage
// stream exists publishes async (retrying until the stream is there), and
// takes fast batches once the stream appears with allow_batched.
func TestFastBatchAfterStreamAppears(t *testing.T) {
	srv := testenv.NATS(t)
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg := DefaultConfig()
	cfg.RetryWait = 20 * time.Millisecond
	e, err := New(nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	emitAll(t, e, 0, 100, spread)
	time.Sleep(100 * time.Millisecond)
	if st := e.Stats(); st.FastBatch || st.Published != 0 {
		t.Fatalf("stats %+v without a stream: want nothing confirmed and async publish", st)
	}
	js, _ := jetstream.New(nc)
	s, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: event.UsageStream, Subjects: []string{event.UsageSubjects},
		Duplicates: 2 * time.Minute, AllowBatchPublish: true})
	if err != nil {
		t.Fatal(err)
	}
	n := 100
	for deadline := time.Now().Add(10 * time.Second); !e.Stats().FastBatch && time.Now().Before(deadline); n += 10 {
		emitAll(t, e, n, n+10, spread)
		time.Sleep(20 * time.Millisecond)
	}
	if err := e.Close(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	st := e.Stats()
	if !st.FastBatch {
		t.Fatalf("stats %+v: no fast batches 10s after the stream appeared", st)
	}
	if got := streamMsgs(t, s); got != uint64(n) || st.Published != uint64(n) {
		t.Fatalf("stream has %d messages, stats %+v; want %d stored and confirmed", got, st, n)
	}
}
