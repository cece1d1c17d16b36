package pgmeter_test

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector"
	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/meter"
	"github.com/tenantguard/tenantguard/collector/pgmeter"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

// benchMeter is a Meter on a real emitter and NATS whose queue is handed
// over only by the returned flush, between timed chunks.
func benchMeter(b *testing.B) (*meter.Meter, func()) {
	b.Helper()
	srv := testenv.NATS(b)
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if err := collector.EnsureStreams(context.Background(), js, collector.DefaultConfig()); err != nil {
		b.Fatal(err)
	}
	em, err := emit.New(nc, emit.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = em.Close(context.Background()) })
	cfg := meter.DefaultConfig()
	cfg.QueueSize, cfg.FlushInterval = 4096, time.Hour
	m, err := meter.New(cfg, meter.Deps{Emitter: em,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Close(context.Background()) })
	return m, func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := m.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		if err := em.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// pair times bare and instrumented in alternating chunks of the same run
// and reports both and their difference in ns and allocations per op.
func pair(b *testing.B, chunk int, bare, inst func(), between func()) {
	var ms runtime.MemStats
	var bareNs, instNs time.Duration
	var bareA, instA uint64
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += chunk {
		n := min(chunk, b.N-done)
		runtime.ReadMemStats(&ms)
		a0, t0 := ms.Mallocs, time.Now()
		for range n {
			bare()
		}
		t1 := time.Now()
		runtime.ReadMemStats(&ms)
		a1, t2 := ms.Mallocs, time.Now()
		for range n {
			inst()
		}
		t3 := time.Now()
		runtime.ReadMemStats(&ms)
		bareNs, instNs = bareNs+t1.Sub(t0), instNs+t3.Sub(t2)
		bareA, instA = bareA+a1-a0, instA+ms.Mallocs-a1
		if between != nil {
			b.StopTimer()
			between()
			b.StartTimer()
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(bareNs.Nanoseconds())/n, "bare-ns/op")
	b.ReportMetric(float64(instNs.Nanoseconds())/n, "inst-ns/op")
	b.ReportMetric(float64((instNs-bareNs).Nanoseconds())/n, "added-ns/op")
	b.ReportMetric((float64(instA)-float64(bareA))/n, "added-allocs/op")
}

// BenchmarkTracer times what the Tracer adds to a query: TraceQueryStart
// and TraceQueryEnd as pgx calls them, against the same loop without
// them, with the emitting included (records handed to a real emitter and
// published between chunks).
func BenchmarkTracer(b *testing.B) {
	m, flush := benchMeter(b)
	tr, err := pgmeter.New(m, pgmeter.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	ctx := event.WithIdentity(context.Background(), event.Identity{Tenant: "acme", User: "u_42"})
	start := pgx.TraceQueryStartData{SQL: "SELECT id, amount, due_at FROM invoices WHERE tenant_id = $1 AND status = $2 ORDER BY due_at LIMIT 50"}
	end := pgx.TraceQueryEndData{CommandTag: pgconn.NewCommandTag("SELECT 50")}
	var sink context.Context
	pair(b, 1024, func() { sink = ctx }, func() {
		qctx := tr.TraceQueryStart(ctx, nil, start)
		tr.TraceQueryEnd(qctx, nil, end)
		sink = qctx
	}, flush)
	_ = sink
	if m.Dropped() != 0 {
		b.Fatalf("%d records dropped", m.Dropped())
	}
}

// BenchmarkQuery is a real round trip to Postgres, through a pool without
// and with the Tracer, in the same run.
func BenchmarkQuery(b *testing.B) {
	m, flush := benchMeter(b)
	_, dsn := testenv.Postgres(b)
	open := func(traced bool) *pgxpool.Pool {
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			b.Fatal(err)
		}
		cfg.MaxConns = 1
		if traced {
			if cfg.ConnConfig.Tracer, err = pgmeter.New(m, pgmeter.DefaultConfig()); err != nil {
				b.Fatal(err)
			}
		}
		p, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(p.Close)
		return p
	}
	bare, traced := open(false), open(true)
	ctx := event.WithIdentity(context.Background(), event.Identity{Tenant: "acme"})
	var n int
	q := func(p *pgxpool.Pool) func() {
		return func() {
			if err := p.QueryRow(ctx, "SELECT $1::int", 7).Scan(&n); err != nil {
				b.Fatal(err)
			}
		}
	}
	pair(b, 256, q(bare), q(traced), flush)
}
