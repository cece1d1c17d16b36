package meter_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector"
	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/meter"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/limiter"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// rig is a service's view of tenantguard on real servers: NATS with the
// usage stream, a collector storing into a fresh ClickHouse database, and
// an emitter.
type rig struct {
	nats   *testenv.NATSServer
	nc     *nats.Conn
	ch     driver.Conn
	em     *emit.Emitter
	signer *limiter.Signer // signs the rig's decisions; its limiters trust it
}

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

func connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{nats: testenv.NATS(t)}
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.signer, err = limiter.NewSigner(priv); err != nil {
		t.Fatal(err)
	}
	r.nc = connect(t, r.nats.URL)
	js, err := jetstream.New(r.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := collector.EnsureStreams(ctx, js, collector.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	chs, db := testenv.ClickHouse(t)
	r.ch = chs.Conn(t, db)
	scfg := store.DefaultConfig()
	scfg.Addr, scfg.Database = []string{chs.Addr}, db
	st, err := store.Open(ctx, scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	pc := pricing.DefaultConfig()
	pc.Prices = map[string]string{"api_request": "0.0001", "webhook_call": "0.0005", "db_query": "0.00002"}
	book, err := pricing.New(pc, nil)
	if err != nil {
		t.Fatal(err)
	}
	ccfg := collector.DefaultConfig()
	ccfg.BatchMaxWait = 50 * time.Millisecond
	c, err := collector.New(ccfg, collector.Deps{JetStream: js, Store: st, Pricer: book, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	t.Cleanup(func() {
		cancel()
		// A collector cancelled while it starts returns the context's error.
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("collector: %v", err)
		}
	})
	ecfg := emit.DefaultConfig()
	ecfg.Service = "meter-test"
	if r.em, err = emit.New(r.nc, ecfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.em.Close(context.Background()) })
	return r
}

// limiter runs a limiter following the decisions bucket on its own
// connection, until the test ends.
func (r *rig) limiter(t *testing.T, mod func(*limiter.Config)) *limiter.Limiter {
	t.Helper()
	cfg := limiter.DefaultConfig()
	cfg.Group = "meter-test"
	cfg.TrustedKeys = []string{limiter.FormatPublicKey(r.signer.PublicKey())}
	cfg.Breaker.OpenFor = time.Minute // stays open while the test looks
	if mod != nil {
		mod(&cfg)
	}
	l, err := limiter.New(cfg, limiter.Deps{Conn: connect(t, r.nats.URL), Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := l.Run(ctx); err != nil {
			t.Errorf("limiter: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait(); l.Close() })
	return l
}

func (r *rig) publisher(t *testing.T) *limiter.Publisher {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc := connect(t, r.nats.URL)
	if js, err := jetstream.New(nc); err != nil {
		t.Fatal(err)
	} else if _, err := limiter.EnsureBuckets(ctx, js, 1, 0); err != nil { // as the daemon does
		t.Fatal(err)
	}
	p, err := limiter.NewPublisher(ctx, nc, limiter.WithSigner(r.signer))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// meter builds a Meter on the rig's emitter, closed when the test ends.
func (r *rig) meter(t *testing.T, cfg meter.Config, lim *limiter.Limiter) *meter.Meter {
	t.Helper()
	deps := meter.Deps{Emitter: r.em, Logger: quietLog()}
	if lim != nil {
		deps.Limiter = lim
	}
	m, err := meter.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m
}

// storedEvent is a row of ClickHouse's events table.
type storedEvent struct {
	Tenant, Kind, Route, User, Service string
	Status                             uint16
	LatencyMs                          float64
	Error                              bool
	Time                               time.Time
	Attrs                              map[string]string
}

// stored waits until ClickHouse holds want events of tenant and kind (or
// more), and returns them in time order.
func (r *rig) stored(t *testing.T, tenant, kind string, want int) []storedEvent {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs := r.query(t, tenant, kind)
		if len(evs) >= want {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("ClickHouse holds %d %s events of %s after 30s, want %d", len(evs), kind, tenant, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *rig) query(t *testing.T, tenant, kind string) []storedEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := r.ch.Query(ctx, `SELECT tenant_id, kind, route, user_id, service, status_code, latency_ms, error,
		time, time_ms, attrs_keys, attrs_values FROM events WHERE tenant_id = ? AND kind = ? ORDER BY time, time_ms`, tenant, kind)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []storedEvent
	for rows.Next() {
		var e storedEvent
		var errFlag uint8
		var ms uint16
		var keys, vals []string
		if err := rows.Scan(&e.Tenant, &e.Kind, &e.Route, &e.User, &e.Service, &e.Status, &e.LatencyMs, &errFlag,
			&e.Time, &ms, &keys, &vals); err != nil {
			t.Fatal(err)
		}
		e.Error = errFlag != 0
		e.Time = e.Time.Add(time.Duration(ms) * time.Millisecond)
		e.Attrs = map[string]string{}
		for i := range keys {
			e.Attrs[keys[i]] = vals[i]
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
