package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/partition"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/limiter"
)

// TestDaemonOnR3ClusterDedupsAcrossLeaderKill runs the daemon against a
// 3-node JetStream cluster with collector.stream.replicas and
// decisions.replicas 3: every stream and bucket it creates has 3
// replicas. Then it kills the usage stream's leader while an emitter
// publishes with Nats-Msg-Id, and sends every event again once a new
// leader is elected: the stream and ClickHouse hold each event once.
func TestDaemonOnR3ClusterDedupsAcrossLeaderKill(t *testing.T) {
	ch, db := testenv.ClickHouse(t)
	c := testenv.NATSClusterOf(t, 3)
	keyPEM, _, err := limiter.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "decisions.key")
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.NATS.URL = c.URL()
	cfg.ClickHouse.Addr, cfg.ClickHouse.Database = []string{ch.Addr}, db
	cfg.API.Listen = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg.Metrics.Listen = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg.Decisions.SigningKeyFile = keyFile
	cfg.Collector.BatchMaxWait = 100 * time.Millisecond
	cfg.Collector.Stream.Replicas, cfg.Decisions.Replicas = 3, 3

	started := make(chan *Daemon, 1)
	d, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(testLogOut(), nil)), Started: func(d *Daemon) { started <- d }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("Run ended before the stages started: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("the stages did not start within 2m")
	}

	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{event.UsageStream, event.DLQStream, event.CorrectionsStream,
		"KV_" + partition.Bucket, "KV_" + event.DecisionsBucket, "KV_" + event.LimitersBucket} {
		s, err := js.Stream(ctx, n)
		if err != nil {
			t.Fatalf("stream %s: %v", n, err)
		}
		if got, want := s.CachedInfo().Config.Replicas, 3; got != want {
			t.Errorf("%s: got %d replicas, want %d", n, got, want)
		}
	}

	// Emit n events; kill the usage stream's leader a third of the way.
	const n = 3000
	ecfg := emit.DefaultConfig()
	ecfg.AckTimeout = 2 * time.Second
	em, err := emit.New(nc, ecfg)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now().UTC()
	ev := func(i int) event.Event {
		return event.Event{ID: fmt.Sprintf("fail-%05d", i), TenantID: "acme", Kind: event.KindAPIRequest,
			Time: base.Add(time.Duration(i) * time.Millisecond), Quantity: 1}
	}
	conn := ch.Conn(t, db)
	var rows, ids uint64
	count := func() bool {
		return conn.QueryRow(ctx, "SELECT count(), uniqExact(id) FROM events WHERE tenant_id = 'acme'").Scan(&rows, &ids) == nil
	}
	var killed int
	var killedAt time.Time
	for i := range n {
		if i == n/3 {
			// The collector is consuming: the first third is stored.
			testenv.Eventually(t, time.Minute, "the first third in ClickHouse", func() bool { return count() && ids >= n/3 })
			killed = c.KillStreamLeader(t, event.UsageStream)
			killedAt = time.Now()
		}
		if err := em.Emit(ctx, ev(i)); err != nil {
			t.Fatalf("emit %d: %v", i, err)
		}
	}
	cctx, ccancel := context.WithTimeout(ctx, time.Minute)
	defer ccancel()
	if err := em.Close(cctx); err != nil {
		t.Fatalf("emitter close: %v (stats %+v)", err, em.Stats())
	}
	st := em.Stats()
	t.Logf("killed n%d (usage stream leader); %d events confirmed %s after the kill, %d publish retries, last error %q",
		killed+1, st.Published, time.Since(killedAt).Round(10*time.Millisecond), st.Retries, st.LastError)
	if st.Published != n {
		t.Fatalf("confirmed %d events, want %d", st.Published, n)
	}

	// A service that never saw its acks sends everything again.
	dups := 0
	for i := range n {
		e := ev(i)
		m := nats.NewMsg(event.Subject(e.TenantID, e.Kind))
		m.Data = event.AppendJSON(nil, &e)
		m.Header.Set(event.HeaderMsgID, e.ID)
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatalf("resend %d: %v", i, err)
		}
		if ack.Duplicate {
			dups++
		}
	}
	if dups != n {
		t.Errorf("resent %d events: JetStream flagged %d as duplicates, want %d", n, dups, n)
	}
	s, err := js.Stream(ctx, event.UsageStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().State.Msgs; got != n {
		t.Errorf("%s holds %d messages, want %d", event.UsageStream, got, n)
	}

	testenv.Eventually(t, time.Minute, "every event in ClickHouse", func() bool { return count() && ids >= n })
	time.Sleep(2 * time.Second) // a late duplicate batch would land by now
	if !count() {
		t.Fatal("count events in ClickHouse")
	}
	if rows != n || ids != n {
		t.Errorf("events in ClickHouse: got %d rows with %d ids, want %d of each", rows, ids, n)
	}
	c.RestartNode(t, killed)
}

// testLogOut is where the cluster test's daemon logs: stderr with
// TG_TEST_LOG set (to see the failover from the daemon's side), else
// nowhere.
func testLogOut() io.Writer {
	if os.Getenv("TG_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}
