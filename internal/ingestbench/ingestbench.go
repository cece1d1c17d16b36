// Package ingestbench measures end-to-end ingest on this machine: synthetic
// traffic through the emitter into JetStream, the collector (a separate
// `tenantguard run` process, so its RSS is its own), and ClickHouse. In the
// same run it measures the raw ceilings (JetStream async publish, JetStream
// fast batch publish, ClickHouse batch insert) and reports the pipeline as
// ratios to them, and the consume floor: fast batch publish, AckAll
// consume and a bare insert of the pipeline's rows, in µs per event.
package ingestbench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/shopspring/decimal"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/tenantguard/tenantguard/collector"
	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/loadgen"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/childproc"
)

// Config sizes the run.
type Config struct {
	Events  int    // total events through the pipeline (default 1,000,000)
	Tenants int    // distinct tenants (default 10,000)
	RawN    int    // messages/rows for each raw ceiling (default = Events)
	Binary  string // tenantguard binary to run as the collector
	// CPUProfile, when set, receives a CPU profile of this process (the
	// load generator, the emitter and the embedded NATS server) during the
	// throughput phase only, the span the CPU figures cover.
	CPUProfile io.Writer
	// CollectorProfile, when set, is where the collector writes a CPU profile.
	CollectorProfile string
	// CollectorEnv is added to the collector's environment, for settings
	// under test such as TENANTGUARD_COLLECTOR_DEDUP_HORIZON=false.
	CollectorEnv []string
	Dir          string // scratch directory (default a temp dir)
	Out          io.Writer
	// EmitBatch is the emitter's fast batch size (emit.Config.Batch); a
	// negative value publishes with async publish only. Default 1000.
	EmitBatch int
}

// Result holds the figures.
type Result struct {
	Events           int
	Seconds          float64
	EventsPerSec     float64
	P50, P99         time.Duration // probes at saturation, queueing included
	PacedRate        float64       // events/s of the latency phase
	PacedP50         time.Duration // probes at PacedRate
	PacedP99         time.Duration
	Probes           int
	CollectorPeakRSS int64 // bytes
	// CPU seconds spent during the throughput phase, per process.
	CPUCollector, CPUClickHouse, CPULoadgenNATS float64
	RawPublishPerSec                            float64
	RawFastBatchPerSec                          float64 // fast batch publish: the floor the emitter's batches aim at
	FastBatchEmitter                            bool    // the pipeline's emitter published through fast batches
	RawRoundTrip                                float64 // publish + pull + ack, nothing stored: the NATS share of the pipeline
	RawInsertPerSec                             float64
	// The consume floor: AckAll pull consume (an ack per 1000 messages) and
	// the store's insert of the pipeline's rows in the collector's blocks.
	RawAckAllPerSec  float64
	BareInsertPerSec float64
	BareInsertBlock  int
	// Work is what ClickHouse and the collector did in the throughput phase.
	Work ServerWork
	// The bench's own queries in the throughput phase (latency probes and
	// the wait for the last row), and the ClickHouse CPU they are
	// estimated to have cost, included in CPUClickHouse.
	ProbePolls, CountPolls int64
	// CPUGenerator is the load generator's own work for Events events
	// (building them, no emitter), measured alone before the run; the
	// same work is inside CPULoadgenNATS.
	CPUGenerator    float64
	CPUBenchQueries float64
}

// Run executes the benchmark and prints progress to cfg.Out.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Events <= 0 {
		cfg.Events = 1_000_000
	}
	if cfg.Tenants <= 0 {
		cfg.Tenants = 10_000
	}
	if cfg.RawN <= 0 {
		cfg.RawN = cfg.Events
	}
	srv, err := startServers(cfg.Dir)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	cfg.Dir = srv.dir
	ch, nc := srv.ch, srv.nc
	logf := func(format string, args ...any) { fmt.Fprintf(cfg.Out, format+"\n", args...) }
	res := &Result{Events: cfg.Events}

	logf("raw JetStream async publish of %d messages...", cfg.RawN)
	if res.RawPublishPerSec, err = rawPublish(ctx, nc, cfg.RawN, cfg.Tenants); err != nil {
		return nil, err
	}
	logf("  %.0f msgs/s", res.RawPublishPerSec)
	logf("raw JetStream fast batch publish of %d messages...", cfg.RawN)
	if res.RawFastBatchPerSec, err = rawFastBatch(ctx, nc, cfg.RawN, cfg.Tenants); err != nil {
		return nil, err
	}
	logf("  %.0f msgs/s", res.RawFastBatchPerSec)
	logf("raw JetStream publish + pull consume + ack of %d messages...", cfg.RawN)
	if res.RawRoundTrip, err = rawRoundTrip(ctx, nc, cfg.RawN, cfg.Tenants); err != nil {
		return nil, err
	}
	logf("  %.0f msgs/s", res.RawRoundTrip)
	logf("raw ClickHouse batch insert of %d rows...", cfg.RawN)
	if res.RawInsertPerSec, err = rawInsert(ctx, ch.Addr, cfg.RawN, cfg.Tenants); err != nil {
		return nil, err
	}
	logf("  %.0f rows/s", res.RawInsertPerSec)
	logf("raw JetStream AckAll consume of %d messages...", cfg.RawN)
	if res.RawAckAllPerSec, err = rawAckAll(ctx, nc, cfg.RawN, cfg.Tenants); err != nil {
		return nil, err
	}
	logf("  %.0f msgs/s", res.RawAckAllPerSec)
	res.BareInsertBlock = collector.DefaultConfig().BatchMaxRows
	logf("bare ClickHouse insert of %d pipeline rows in blocks of %d...", cfg.RawN, res.BareInsertBlock)
	if res.BareInsertPerSec, err = bareInsert(ctx, ch.Addr, cfg.RawN, cfg.Tenants, res.BareInsertBlock); err != nil {
		return nil, err
	}
	logf("  %.0f rows/s", res.BareInsertPerSec)

	st, err := openStore(ctx, ch.Addr, "tenantguard")
	if err != nil {
		return nil, err
	}
	defer st.Close()
	logf("pipeline: %d events across %d tenants, loadgen -> JetStream -> collector -> ClickHouse", cfg.Events, cfg.Tenants)
	collector, metricsURL, err := startCollector(ctx, cfg, srv, st)
	if err != nil {
		return nil, err
	}
	defer collector.Stop()
	if res.CPUGenerator, err = generatorCPU(ctx, cfg); err != nil {
		return nil, err
	}
	counters0, err := chCounters(ctx, st)
	if err != nil {
		return nil, err
	}
	if cfg.CPUProfile != nil {
		if err := pprof.StartCPUProfile(cfg.CPUProfile); err != nil {
			return nil, err
		}
	}
	cpu0 := [3]float64{procCPU(collector.Pid()), procCPU(ch.PID()), selfCPU()}
	start := time.Now()
	var polls benchPolls
	lat, fast, err := pipeline(ctx, cfg, nc, st, 0, cfg.Events, uint64(cfg.Events), &polls, logf)
	if cfg.CPUProfile != nil {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return nil, err
	}
	res.FastBatchEmitter = fast
	res.Seconds = time.Since(start).Seconds()
	res.CPUCollector = procCPU(collector.Pid()) - cpu0[0]
	res.CPUClickHouse = procCPU(ch.PID()) - cpu0[1]
	res.CPULoadgenNATS = selfCPU() - cpu0[2]
	counters1, err := chCounters(ctx, st)
	if err != nil {
		return nil, err
	}
	res.Work = serverWork(counters0, counters1)
	res.ProbePolls, res.CountPolls = polls.probes.Load(), polls.counts.Load()
	if res.CPUBenchQueries, err = priceBenchQueries(ctx, st, ch.PID(), res.ProbePolls, res.CountPolls); err != nil {
		return nil, err
	}
	if sum, n, err := scrapeHistogram(ctx, metricsURL, "tenantguard_collector_batch_rows"); err == nil && n > 0 {
		res.Work.CollectorBatches, res.Work.CollectorRowsPerInsert = n, sum/n
	}
	res.EventsPerSec = float64(cfg.Events) / res.Seconds
	res.Probes = len(lat)
	res.P50, res.P99 = quantiles(lat)
	res.PacedRate = min(100000, float64(int(res.EventsPerSec*0.6/1000))*1000)
	paced := int(res.PacedRate * 10)
	logf("latency phase: %d events paced at %.0f events/s", paced, res.PacedRate)
	lat, _, err = pipeline(ctx, cfg, nc, st, res.PacedRate, paced, uint64(cfg.Events+paced), &benchPolls{}, logf)
	if err != nil {
		return nil, err
	}
	res.PacedP50, res.PacedP99 = quantiles(lat)
	res.CollectorPeakRSS = peakRSS(collector.Pid())
	return res, nil
}

// Print writes the figures and the ratios to the raw ceilings.
func (r *Result) Print(w io.Writer) {
	fmt.Fprintf(w, "\nend-to-end ingest: %d events in %.2fs\n", r.Events, r.Seconds)
	fmt.Fprintf(w, "  sustained            %10.0f events/s\n", r.EventsPerSec)
	fmt.Fprintf(w, "  publish->queryable   at %.0f events/s: p50 %v  p99 %v\n", r.PacedRate, r.PacedP50.Round(time.Millisecond), r.PacedP99.Round(time.Millisecond))
	fmt.Fprintf(w, "                       at saturation: p50 %v  p99 %v (emitter queueing included; %d probes)\n", r.P50.Round(time.Millisecond), r.P99.Round(time.Millisecond), r.Probes)
	fmt.Fprintf(w, "  collector peak RSS   %10.1f MiB\n", float64(r.CollectorPeakRSS)/(1<<20))
	perEvent := func(sec float64) float64 { return sec / float64(r.Events) * 1e6 }
	fmt.Fprintf(w, "  CPU during the run     collector %.1fs (%.1f µs/event)  ClickHouse %.1fs (%.1f µs/event)  loadgen+embedded NATS %.1fs (%.1f µs/event)\n",
		r.CPUCollector, perEvent(r.CPUCollector), r.CPUClickHouse, perEvent(r.CPUClickHouse), r.CPULoadgenNATS, perEvent(r.CPULoadgenNATS))
	fmt.Fprintf(w, "  the load generator's own event building %.1fs (%.1f µs/event, measured alone before the run): in loadgen+embedded NATS above, not the pipeline's; without it %.1f µs/event\n",
		r.CPUGenerator, perEvent(r.CPUGenerator), perEvent(max(r.CPULoadgenNATS-r.CPUGenerator, 0)))
	fmt.Fprintf(w, "  the bench's own queries  %d probe polls, %d row counts: ClickHouse about %.1fs (%.1f µs/event, priced by repeating them after the run); ClickHouse without them %.1f µs/event\n",
		r.ProbePolls, r.CountPolls, r.CPUBenchQueries, perEvent(r.CPUBenchQueries), perEvent(max(r.CPUClickHouse-r.CPUBenchQueries, 0)))
	w2 := r.Work
	fmt.Fprintf(w, "  ClickHouse's work      %d inserts (the collector's: %.0f, %.0f rows each)  %d selects  %.0f MiB read  %d merges of %d rows in %.1fs  query threads' user CPU %.1fs\n",
		w2.Inserts, w2.CollectorBatches, w2.CollectorRowsPerInsert, w2.Selects, float64(w2.ReadBytes)/(1<<20), w2.Merges, w2.MergedRows, w2.MergeSeconds, w2.QueryUserSeconds)
	fmt.Fprintf(w, "raw ceilings, same run:\n")
	fmt.Fprintf(w, "  JetStream async publish  %10.0f msgs/s   pipeline ratio %.2f\n", r.RawPublishPerSec, r.EventsPerSec/r.RawPublishPerSec)
	path := "async publish"
	if r.FastBatchEmitter {
		path = "fast batches"
	}
	fmt.Fprintf(w, "  JetStream fast batch publish %6.0f msgs/s   pipeline ratio %.2f   (%.2f x async; the emitter used %s)\n",
		r.RawFastBatchPerSec, r.EventsPerSec/r.RawFastBatchPerSec, r.RawFastBatchPerSec/r.RawPublishPerSec, path)
	fmt.Fprintf(w, "  JetStream publish+pull+ack %8.0f msgs/s   pipeline ratio %.2f\n", r.RawRoundTrip, r.EventsPerSec/r.RawRoundTrip)
	fmt.Fprintf(w, "  ClickHouse batch insert  %10.0f rows/s   pipeline ratio %.2f\n", r.RawInsertPerSec, r.EventsPerSec/r.RawInsertPerSec)
	fmt.Fprintf(w, "  JetStream AckAll consume %10.0f msgs/s   (pull, an ack per 1000 messages)\n", r.RawAckAllPerSec)
	fmt.Fprintf(w, "  ClickHouse bare insert   %10.0f rows/s   (the pipeline's rows, blocks of %d)\n", r.BareInsertPerSec, r.BareInsertBlock)
	floor := r.FloorMicros()
	fmt.Fprintf(w, "  floor: fast batch publish + AckAll consume + bare insert  %.1f µs/event (%.0f events/s)   pipeline %.1f µs/event, %.2f x floor\n",
		floor, 1e6/floor, 1e6/r.EventsPerSec, 1e6/r.EventsPerSec/floor)
}

// FloorMicros is the consume floor in µs per event: one fast batch
// publish, one AckAll consume and one bare insert, each at its raw rate.
func (r *Result) FloorMicros() float64 {
	return 1e6/r.RawFastBatchPerSec + 1e6/r.RawAckAllPerSec + 1e6/r.BareInsertPerSec
}

func freePort() int {
	l, err := netListen()
	if err != nil {
		return 0
	}
	defer l.Close()
	return portOf(l.Addr().String())
}

func openStore(ctx context.Context, addr, db string) (*store.Store, error) {
	cfg := store.DefaultConfig()
	cfg.Addr, cfg.Database = []string{addr}, db
	return store.Open(ctx, cfg)
}

func encoded(n, tenants int, prefix string) []*nats.Msg {
	msgs := make([]*nats.Msg, n)
	now := time.Now()
	for i := range msgs {
		e := event.Event{ID: prefix + strconv.Itoa(i), TenantID: "t" + strconv.Itoa(i%tenants), Kind: "api_request",
			Time: now, Quantity: 1, LatencyMs: 12.5, StatusCode: 200, Route: "GET /v1/invoices", Service: "bench"}
		m := nats.NewMsg("raw." + e.TenantID)
		m.Data = event.AppendJSON(nil, &e)
		m.Header.Set(event.HeaderMsgID, e.ID)
		msgs[i] = m
	}
	return msgs
}

// rawPublish measures JetStream async publish of pre-encoded messages.
func rawPublish(ctx context.Context, nc *nats.Conn, n, tenants int) (float64, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return 0, err
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}, Storage: jetstream.FileStorage}); err != nil {
		return 0, err
	}
	defer js.DeleteStream(context.Background(), "RAW")
	msgs := encoded(n, tenants, "r")
	start := time.Now()
	for _, m := range msgs {
		if _, err := js.PublishMsgAsync(m, stallWait); err != nil {
			return 0, err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// rawFastBatch measures JetStream fast batch publishing of pre-encoded
// messages the way the emitter batches them: batches of 1000, one at a
// time, an ack every 500 messages and up to 8 acks outstanding.
func rawFastBatch(ctx context.Context, nc *nats.Conn, n, tenants int) (float64, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAWFB", Subjects: []string{"rawfb.>"}, Storage: jetstream.FileStorage,
		AllowBatchPublish: true}); err != nil {
		return 0, err
	}
	defer js.DeleteStream(context.Background(), "RAWFB")
	msgs := encoded(n, tenants, "fb")
	for _, m := range msgs {
		m.Subject = "rawfb." + m.Subject
	}
	const batch = 1000
	start := time.Now()
	for from := 0; from < n; from += batch {
		fp, err := jetstreamext.NewFastPublisher(js, jetstreamext.FastPublishFlowControl{Flow: 500, MaxOutstandingAcks: 8})
		if err != nil {
			return 0, err
		}
		for _, m := range msgs[from:min(from+batch, n)] {
			if _, err := fp.AddMsg(m); err != nil {
				return 0, fmt.Errorf("fast batch: %w", err)
			}
		}
		ack, err := fp.Close(ctx)
		if err != nil {
			return 0, fmt.Errorf("fast batch commit: %w", err)
		}
		if want := uint64(min(batch, n-from)); ack.BatchSize != want {
			return 0, fmt.Errorf("fast batch stored %d of %d messages", ack.BatchSize, want)
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// rawRoundTrip measures what NATS alone does per event in the pipeline:
// async publish into a stream while a durable pull consumer reads and acks
// every message, until the last ack.
func rawRoundTrip(ctx context.Context, nc *nats.Conn, n, tenants int) (float64, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return 0, err
	}
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAWRT", Subjects: []string{"rawrt.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		return 0, err
	}
	defer js.DeleteStream(context.Background(), "RAWRT")
	_, err = s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "rawrt", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 40000})
	if err != nil {
		return 0, err
	}
	msgs := encoded(n, tenants, "rt")
	for _, m := range msgs {
		m.Subject = "rawrt." + m.Subject
	}
	consumer, err := nats.Connect(nc.ConnectedUrl())
	if err != nil {
		return 0, err
	}
	defer consumer.Close()
	cjs, _ := jetstream.New(consumer)
	ccons, err := cjs.Consumer(ctx, "RAWRT", "rawrt")
	if err != nil {
		return 0, err
	}
	it, err := ccons.Messages(jetstream.PullMaxMessages(20000))
	if err != nil {
		return 0, err
	}
	defer it.Stop()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		for i := 0; i < n; i++ {
			m, err := it.Next()
			if err != nil {
				done <- err
				return
			}
			_ = m.Ack()
		}
		done <- consumer.Flush()
	}()
	for _, m := range msgs {
		if _, err := js.PublishMsgAsync(m, stallWait); err != nil {
			return 0, err
		}
	}
	select {
	case err := <-done:
		if err != nil {
			return 0, err
		}
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// rawAckAll measures a pull consumer with AckAll, as the collector's slot
// consumers: n pre-published messages read and acked by the last of each
// 1000, until JetStream confirms the final ack.
func rawAckAll(ctx context.Context, nc *nats.Conn, n, tenants int) (float64, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return 0, err
	}
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAWAA", Subjects: []string{"rawaa.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		return 0, err
	}
	defer js.DeleteStream(context.Background(), "RAWAA")
	for _, m := range encoded(n, tenants, "aa") {
		m.Subject = "rawaa." + m.Subject
		if _, err := js.PublishMsgAsync(m, stallWait); err != nil {
			return 0, err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	const every = 1000
	cons, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "rawaa", AckPolicy: jetstream.AckAllPolicy,
		MaxAckPending: collector.DefaultConfig().MaxAckPending})
	if err != nil {
		return 0, err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(5000))
	if err != nil {
		return 0, err
	}
	defer it.Stop()
	start := time.Now()
	for i := 1; i <= n; i++ {
		m, err := it.Next()
		if err != nil {
			return 0, err
		}
		switch {
		case i == n:
			if err := m.DoubleAck(ctx); err != nil {
				return 0, err
			}
		case i%every == 0:
			_ = m.Ack()
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// bareInsert measures the store's insert of the rows the pipeline stores
// (the load generator's events, priced), in blocks of the collector's
// batch_max_rows. Only the inserts are timed.
func bareInsert(ctx context.Context, addr string, n, tenants, block int) (float64, error) {
	st, err := openStore(ctx, addr, "bare_bench")
	if err != nil {
		return 0, err
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		return 0, err
	}
	defer st.Conn().Exec(context.Background(), "DROP DATABASE IF EXISTS bare_bench")
	lc := loadgen.DefaultConfig()
	lc.Tenants, lc.TenantPrefix, lc.Count = tenants, "t", n
	gen, err := loadgen.NewGenerator(lc)
	if err != nil {
		return 0, err
	}
	book, err := pricing.New(pricing.DefaultConfig(), nil)
	if err != nil {
		return 0, err
	}
	names := gen.Tenants()
	evs := make([]event.Event, block)
	rows := make([]store.Row, block)
	var spent time.Duration
	for done := 0; done < n; done += block {
		k := min(block, n-done)
		now := time.Now()
		for i := range k {
			gen.Event(&evs[i], (done+i)%len(names), now)
			plan, unit := book.Price(evs[i].TenantID, evs[i].Kind)
			rows[i] = store.Row{Event: &evs[i], Plan: plan, UnitPrice: unit, Cost: pricing.Cost(evs[i].Quantity, unit), PriceVersion: book.Version()}
		}
		start := time.Now()
		if err := st.InsertEvents(ctx, rows[:k], now); err != nil {
			return 0, err
		}
		spent += time.Since(start)
	}
	return float64(n) / spent.Seconds(), nil
}

// rawInsert measures the store's batch insert into a scratch database.
func rawInsert(ctx context.Context, addr string, n, tenants int) (float64, error) {
	st, err := openStore(ctx, addr, "raw_bench")
	if err != nil {
		return 0, err
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		return 0, err
	}
	defer st.Conn().Exec(context.Background(), "DROP DATABASE IF EXISTS raw_bench")
	const batch = 10000
	rows := make([]store.Row, batch)
	evs := make([]event.Event, batch)
	now := time.Now()
	unit := decimal.RequireFromString("0.0001")
	start := time.Now()
	for done := 0; done < n; done += batch {
		for i := range rows {
			evs[i] = event.Event{ID: "i" + strconv.Itoa(done+i), TenantID: "t" + strconv.Itoa((done+i)%tenants),
				Kind: "api_request", Time: now, Quantity: 1, LatencyMs: 12.5, StatusCode: 200, Route: "GET /v1/invoices", Service: "bench"}
			rows[i] = store.Row{Event: &evs[i], Plan: "default", UnitPrice: unit, Cost: unit, PriceVersion: "bench"}
		}
		if err := st.InsertEvents(ctx, rows, now); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// startCollector starts `tenantguard run` against the servers and waits
// until it has created the events table and the usage stream; on an error
// the process is stopped.
func startCollector(ctx context.Context, cfg Config, srv *servers, st *store.Store) (*childproc.Proc, string, error) {
	proc, metricsURL, err := spawnCollector(cfg, srv.ns.ClientURL(), srv.ch.Addr)
	if err != nil {
		return nil, "", err
	}
	if err := waitTable(ctx, st); err != nil {
		proc.Stop()
		return nil, "", fmt.Errorf("%w; collector output:\n%s", err, proc.Tail())
	}
	if err := waitStream(ctx, srv.nc); err != nil {
		proc.Stop()
		return nil, "", err
	}
	return proc, metricsURL, nil
}

// spawnCollector starts `tenantguard run` against the servers, its
// output in collector.log under cfg.Dir.
func spawnCollector(cfg Config, natsURL, chAddr string) (proc *childproc.Proc, metricsURL string, err error) {
	args := []string{"run"}
	if cfg.CollectorProfile != "" {
		args = append(args, "--cpuprofile", cfg.CollectorProfile)
	}
	cmd := exec.Command(cfg.Binary, args...)
	cmd.Dir = cfg.Dir // no ./tenantguard.yaml there
	metrics := "127.0.0.1:" + strconv.Itoa(freePort())
	env := append([]string{
		"TENANTGUARD_NATS_URL=" + natsURL,
		"TENANTGUARD_CLICKHOUSE_ADDR=" + chAddr,
		"TENANTGUARD_METRICS_LISTEN=" + metrics,
		"TENANTGUARD_API_LISTEN=127.0.0.1:" + strconv.Itoa(freePort()),
		"TENANTGUARD_LOG_LEVEL=warn",
	}, cfg.CollectorEnv...)
	proc, err = childproc.Start("collector", cmd, filepath.Join(cfg.Dir, "collector.log"), env...)
	return proc, "http://" + metrics + "/metrics", err
}

// waitTable waits until the collector has migrated the schema.
func waitTable(ctx context.Context, st *store.Store) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		var n uint64
		if err := st.Conn().QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = 'tenantguard' AND name = 'events'").Scan(&n); err == nil && n == 1 {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("collector did not create tenantguard.events within 60s")
}

// waitStream waits until the collector has created the usage stream, so
// the emitter finds it, and its batch flag, at its first event.
func waitStream(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := js.Stream(ctx, event.UsageStream); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("collector did not create stream %s within 60s", event.UsageStream)
}

// pipeline sends count events at rate (0 = unpaced), waits until the table
// holds total rows, and returns the publish->queryable latency of probes:
// one event in 500 goes to tenant "probe" with a recorded publish time. It
// also says whether the emitter published through fast batches.
func pipeline(ctx context.Context, cfg Config, nc *nats.Conn, st *store.Store, rate float64, count int, total uint64, polls *benchPolls, logf func(string, ...any)) ([]time.Duration, bool, error) {
	lc := loadgen.DefaultConfig()
	lc.Tenants, lc.Rate, lc.Count, lc.TenantPrefix, lc.Seed = cfg.Tenants, rate, count, "t", total
	gen, err := loadgen.NewGenerator(lc)
	if err != nil {
		return nil, false, err
	}
	ecfg := emit.DefaultConfig()
	ecfg.Service = "bench"
	if cfg.EmitBatch != 0 {
		ecfg.Batch = max(cfg.EmitBatch, 0)
	}
	ecfg.Logger = slog.New(slog.DiscardHandler) // the path is reported below
	em, err := emit.New(nc, ecfg)
	if err != nil {
		return nil, false, err
	}
	probes := &probeEmitter{em: em, sent: map[string]time.Time{}, prefix: fmt.Sprintf("probe-%d-", total)}
	pctx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	var wg sync.WaitGroup
	var seen map[string]time.Time
	wg.Add(1)
	go func() { defer wg.Done(); seen = pollProbes(pctx, st, &polls.probes) }()
	start := time.Now()
	if _, err := gen.Run(ctx, probes, func(p loadgen.Progress) {
		logf("  sent %d  %.0f ev/s", p.Sent, p.Rate)
	}); err != nil {
		return nil, false, err
	}
	if err := em.Close(ctx); err != nil {
		return nil, false, err
	}
	fast := em.Stats().FastBatch
	path := "async publish"
	if fast {
		path = "fast batches"
	}
	logf("  %d events confirmed by JetStream after %.1fs (emitter: %s); waiting for ClickHouse", count, time.Since(start).Seconds(), path)
	for {
		var n uint64
		if err := st.Conn().QueryRow(ctx, countQuery).Scan(&n); err != nil {
			return nil, false, err
		}
		polls.counts.Add(1)
		if n >= total {
			break
		}
		if time.Since(start) > 10*time.Minute {
			return nil, false, fmt.Errorf("only %d of %d events stored after 10 minutes", n, total)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	stopPoll()
	wg.Wait()
	var lat []time.Duration
	for id, sent := range probes.sent {
		if at, ok := seen[id]; ok {
			lat = append(lat, at.Sub(sent))
		}
	}
	return lat, fast, nil
}

func quantiles(lat []time.Duration) (p50, p99 time.Duration) {
	if len(lat) == 0 {
		return 0, 0
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat[len(lat)/2], lat[len(lat)*99/100]
}

// probeEmitter turns one event in every (default 500) into a probe.
type probeEmitter struct {
	em     *emit.Emitter
	n      int
	every  int
	prefix string
	sent   map[string]time.Time
}

func (p *probeEmitter) Emit(ctx context.Context, e event.Event) error {
	p.n++
	every := p.every
	if every <= 0 {
		every = 500
	}
	if p.n%every == 0 {
		e.TenantID, e.ID = "probe", p.prefix+strconv.Itoa(p.n)
		p.sent[e.ID] = time.Now()
	}
	return p.em.Emit(ctx, e)
}

// pollProbes records when each probe first becomes queryable.
// n counts the polls.
func pollProbes(ctx context.Context, st *store.Store, n *atomic.Int64) map[string]time.Time {
	seen := map[string]time.Time{}
	for ctx.Err() == nil {
		n.Add(1)
		rows, err := st.Conn().Query(ctx, probeQuery)
		if err == nil {
			now := time.Now()
			for rows.Next() {
				var id string
				if rows.Scan(&id) == nil {
					if _, ok := seen[id]; !ok {
						seen[id] = now
					}
				}
			}
			rows.Close()
		}
		time.Sleep(25 * time.Millisecond)
	}
	return seen
}

// procCPU returns user+system CPU seconds of a live process (Linux).
func procCPU(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are the
	// 12th and 13th of them, in clock ticks (100 per second on Linux).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	k, _ := strconv.ParseFloat(f[12], 64)
	return (u + k) / 100
}

func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// peakRSS reads VmHWM of a live process.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// stallWait lets an async publish of a raw ceiling wait for acks on a
// loaded machine instead of failing after nats.go's default 200ms.
var stallWait = jetstream.WithStallWait(10 * time.Second)
