package ingestbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/loadgen"
	"github.com/tenantguard/tenantguard/collector/store"
)

// floodTenant is the tenant that floods.
const floodTenant = "flood"

// FloodConfig sizes `tenantguard bench flood`.
type FloodConfig struct {
	Tenants int // tenants publishing normally (default 1,000)
	// Capacity is the pipeline's sustained events/s; 0 measures it first
	// with Calibrate events sent unpaced. Default 0.
	Capacity  float64
	Calibrate int // events of the calibration run (default 200,000)
	// Phase is how long each phase publishes (default 20s).
	Phase time.Duration
	// Factor is the flooding tenant's offered rate as a multiple of
	// Capacity (default 10).
	Factor float64
	// Load is the other tenants' rate as a share of Capacity (default 0.5).
	Load float64
	// TenantRate is the emitter's per-tenant rate (emit.Config.TenantRate);
	// 0 means Capacity/4, a negative value sets none. Default 0.
	TenantRate float64
	// ProbeEvery makes one normal event in this many a latency probe
	// (default 100).
	ProbeEvery   int
	EmitBatch    int      // as Config.EmitBatch
	Binary       string   // tenantguard binary to run as the collector
	CollectorEnv []string // added to the collector's environment
	Dir          string   // scratch directory (default a temp dir)
	Out          io.Writer
}

// FloodPhase holds one phase's figures.
type FloodPhase struct {
	Rate          float64 // the other tenants' events/s, offered
	Sent          uint64  // the other tenants' events accepted
	P50, P99      time.Duration
	Probes        int
	FloodOffered  float64 // the flooding tenant's offered events/s
	FloodAccepted uint64  // flood events Emit accepted
	FloodStored   uint64  // rows of the flooding tenant in ClickHouse
	FloodDistinct uint64  // distinct ids among them
	FloodDrain    time.Duration
}

// FloodResult holds the figures of both phases.
type FloodResult struct {
	Tenants    int
	Capacity   float64
	Measured   bool // Capacity was measured in this run
	TenantRate float64
	Phase      time.Duration
	Calm       FloodPhase
	Flood      FloodPhase
	Emitter    emit.Stats // the flood phase's emitter at its close
}

// RunFlood measures the other tenants' publish->queryable latency without
// and then with one tenant flooding, in one run, and counts the flooding
// tenant's events in ClickHouse.
func RunFlood(ctx context.Context, cfg FloodConfig) (*FloodResult, error) {
	if cfg.Tenants <= 0 {
		cfg.Tenants = 1000
	}
	if cfg.Calibrate <= 0 {
		cfg.Calibrate = 200_000
	}
	if cfg.Phase <= 0 {
		cfg.Phase = 20 * time.Second
	}
	if cfg.Factor <= 0 {
		cfg.Factor = 10
	}
	if cfg.Load <= 0 {
		cfg.Load = 0.5
	}
	if cfg.ProbeEvery <= 0 {
		cfg.ProbeEvery = 100
	}
	srv, err := startServers(cfg.Dir)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	cfg.Dir = srv.dir
	ch, nc := srv.ch, srv.nc
	logf := func(format string, args ...any) { fmt.Fprintf(cfg.Out, format+"\n", args...) }
	st, err := openStore(ctx, ch.Addr, "tenantguard")
	if err != nil {
		return nil, err
	}
	defer st.Close()
	icfg := Config{Tenants: cfg.Tenants, EmitBatch: cfg.EmitBatch, Binary: cfg.Binary, CollectorEnv: cfg.CollectorEnv, Dir: cfg.Dir}
	collector, _, err := startCollector(ctx, icfg, srv, st)
	if err != nil {
		return nil, err
	}
	defer collector.Stop()
	res := &FloodResult{Tenants: cfg.Tenants, Capacity: cfg.Capacity, Phase: cfg.Phase}
	var total uint64
	if res.Capacity <= 0 {
		logf("calibration: %d events unpaced across %d tenants", cfg.Calibrate, cfg.Tenants)
		total = uint64(cfg.Calibrate)
		start := time.Now()
		if _, _, err := pipeline(ctx, icfg, nc, st, 0, cfg.Calibrate, total, &benchPolls{}, logf); err != nil {
			return nil, err
		}
		res.Capacity, res.Measured = float64(cfg.Calibrate)/time.Since(start).Seconds(), true
		logf("  capacity %.0f events/s", res.Capacity)
	}
	switch {
	case cfg.TenantRate == 0:
		res.TenantRate = float64(int(res.Capacity/4/100)) * 100
	case cfg.TenantRate > 0:
		res.TenantRate = cfg.TenantRate
	}
	rate := float64(int(res.Capacity*cfg.Load/100)) * 100
	for i, ph := range []*FloodPhase{&res.Calm, &res.Flood} {
		flood := i == 1
		ph.Rate = rate
		if flood {
			ph.FloodOffered = res.Capacity * cfg.Factor
			logf("flood phase: %d tenants at %.0f events/s for %v, tenant %q offered %.0f events/s", cfg.Tenants, rate, cfg.Phase, floodTenant, ph.FloodOffered)
		} else {
			logf("no-flood phase: %d tenants at %.0f events/s for %v", cfg.Tenants, rate, cfg.Phase)
		}
		stats, err := floodPhase(ctx, cfg, res.TenantRate, nc, st, ph, &total, logf)
		if err != nil {
			return nil, err
		}
		if flood {
			res.Emitter = stats
		}
	}
	return res, nil
}

// floodPhase runs one phase: the other tenants paced through loadgen with
// probes, and with FloodOffered set the flooding tenant from a goroutine
// of its own through the same emitter. It waits until ClickHouse holds
// every accepted event, and counts the flooding tenant's rows.
func floodPhase(ctx context.Context, cfg FloodConfig, tenantRate float64, nc *nats.Conn, st *store.Store, ph *FloodPhase, total *uint64, logf func(string, ...any)) (emit.Stats, error) {
	ecfg := emit.DefaultConfig()
	ecfg.Service = "bench"
	if cfg.EmitBatch != 0 {
		ecfg.Batch = max(cfg.EmitBatch, 0)
	}
	ecfg.TenantRate = max(tenantRate, 0)
	ecfg.Logger = slog.New(slog.DiscardHandler)
	em, err := emit.New(nc, ecfg)
	if err != nil {
		return emit.Stats{}, err
	}
	lc := loadgen.DefaultConfig()
	lc.Tenants, lc.Rate, lc.Duration, lc.TenantPrefix, lc.Seed = cfg.Tenants, ph.Rate, cfg.Phase, "n", *total+1
	gen, err := loadgen.NewGenerator(lc)
	if err != nil {
		return emit.Stats{}, err
	}
	probes := &probeEmitter{em: em, every: cfg.ProbeEvery, sent: map[string]time.Time{}, prefix: fmt.Sprintf("probe-p%d-", *total)}
	pctx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	var wg sync.WaitGroup
	var seen map[string]time.Time
	wg.Add(1)
	go func() { defer wg.Done(); seen = pollProbes(pctx, st, new(atomic.Int64)) }()

	phaseCtx, endPhase := context.WithTimeout(ctx, cfg.Phase)
	defer endPhase()
	var flooded sync.WaitGroup
	var floodErr error
	if ph.FloodOffered > 0 {
		flooded.Add(1)
		go func() {
			defer flooded.Done()
			ph.FloodAccepted, floodErr = floodLoad(phaseCtx, em, ph.FloodOffered, *total)
		}()
	}
	p, err := gen.Run(ctx, probes, func(p loadgen.Progress) {
		logf("  sent %d  %.0f ev/s  (flood tenant: %d queued or sent)", p.Sent, p.Rate, em.Stats().Accepted-p.Sent)
	})
	if err != nil {
		return emit.Stats{}, err
	}
	ended := time.Now()
	endPhase()
	flooded.Wait()
	if floodErr != nil {
		return emit.Stats{}, floodErr
	}
	ph.Sent = p.Sent
	if err := em.Close(ctx); err != nil {
		return emit.Stats{}, err
	}
	stats := em.Stats()
	if p.Failed > 0 {
		return stats, fmt.Errorf("%d of the other tenants' events refused by the emitter", p.Failed)
	}
	*total += p.Sent + ph.FloodAccepted
	logf("  %d events confirmed by JetStream %.1fs after the phase ended; waiting for ClickHouse", p.Sent+ph.FloodAccepted, time.Since(ended).Seconds())
	if err := waitRows(ctx, st, *total); err != nil {
		return stats, err
	}
	stopPoll()
	wg.Wait()
	var lat []time.Duration
	for id, sent := range probes.sent {
		if at, ok := seen[id]; ok {
			lat = append(lat, at.Sub(sent))
		}
	}
	ph.Probes = len(lat)
	ph.P50, ph.P99 = quantiles(lat)
	if ph.FloodOffered > 0 {
		ph.FloodDrain = time.Since(ended)
		err := st.Conn().QueryRow(ctx, "SELECT count(), uniqExact(id) FROM tenantguard.events WHERE tenant_id = ?", floodTenant).
			Scan(&ph.FloodStored, &ph.FloodDistinct)
		if err != nil {
			return stats, fmt.Errorf("count the flood: %w", err)
		}
	}
	return stats, nil
}

// floodLoad emits the flooding tenant's events paced at rate until ctx
// ends, and returns how many Emit accepted. Emit blocking is the
// emitter's backpressure: the flood offers what it can and takes what it
// is given.
func floodLoad(ctx context.Context, em *emit.Emitter, rate float64, seed uint64) (uint64, error) {
	const tick = 10 * time.Millisecond
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	prefix := "flood-" + strconv.FormatUint(seed, 10) + "-"
	var accepted uint64
	credit := 0.0
	for {
		select {
		case <-ctx.Done():
			return accepted, nil
		case <-ticker.C:
		}
		credit += rate * tick.Seconds()
		for ; credit >= 1; credit-- {
			ev := event.Event{ID: prefix + strconv.FormatUint(accepted, 10), TenantID: floodTenant, Kind: event.KindAPIRequest,
				Quantity: 1, Route: "POST /v1/search", LatencyMs: 12.5, StatusCode: 200}
			if err := em.Emit(ctx, ev); err != nil {
				if ctx.Err() != nil {
					return accepted, nil // pushed back until the phase ended: refused, not lost
				}
				return accepted, fmt.Errorf("flood: %w", err)
			}
			accepted++
		}
	}
}

// waitRows waits until the events table holds at least want rows.
func waitRows(ctx context.Context, st *store.Store, want uint64) error {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		var n uint64
		if err := st.Conn().QueryRow(ctx, "SELECT count() FROM tenantguard.events").Scan(&n); err != nil {
			return err
		}
		if n >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d events stored after 10 minutes", n, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ErrFloodTarget is returned by Check when a target is missed.
var ErrFloodTarget = errors.New("flood bench target missed")

// Check says whether the run met its targets: the other tenants' p99
// within 2x of the no-flood phase, and every accepted flood event stored
// exactly once.
func (r *FloodResult) Check() error {
	var errs []error
	if r.Calm.P99 > 0 && r.Flood.P99 > 2*r.Calm.P99 {
		errs = append(errs, fmt.Errorf("%w: p99 %v under the flood, over 2x the %v without", ErrFloodTarget, r.Flood.P99, r.Calm.P99))
	}
	if r.Flood.FloodStored != r.Flood.FloodAccepted || r.Flood.FloodDistinct != r.Flood.FloodAccepted {
		errs = append(errs, fmt.Errorf("%w: flood events accepted %d, stored %d, distinct %d", ErrFloodTarget,
			r.Flood.FloodAccepted, r.Flood.FloodStored, r.Flood.FloodDistinct))
	}
	return errors.Join(errs...)
}

// Print writes the figures in the ingest bench's layout.
func (r *FloodResult) Print(w io.Writer) {
	how := "given"
	if r.Measured {
		how = "measured in this run"
	}
	rate := "none"
	if r.TenantRate > 0 {
		rate = fmt.Sprintf("%.0f events/s", r.TenantRate)
	}
	fmt.Fprintf(w, "\nflood: %d tenants at %.0f events/s, then one more tenant offering %.0f events/s (%.0fx capacity), %v each phase\n",
		r.Tenants, r.Calm.Rate, r.Flood.FloodOffered, r.Flood.FloodOffered/r.Capacity, r.Phase)
	fmt.Fprintf(w, "  capacity             %10.0f events/s (%s)\n", r.Capacity, how)
	fmt.Fprintf(w, "  emitter tenant rate  %s (emit.Config.TenantRate)\n", rate)
	fmt.Fprintf(w, "  publish->queryable   no flood: p50 %v  p99 %v (%d probes)\n", r.Calm.P50.Round(time.Millisecond), r.Calm.P99.Round(time.Millisecond), r.Calm.Probes)
	ratio := 0.0
	if r.Calm.P99 > 0 {
		ratio = float64(r.Flood.P99) / float64(r.Calm.P99)
	}
	fmt.Fprintf(w, "                       flood:    p50 %v  p99 %v (%d probes)   p99 ratio %.2f (target <= 2)\n",
		r.Flood.P50.Round(time.Millisecond), r.Flood.P99.Round(time.Millisecond), r.Flood.Probes, ratio)
	admitted := float64(r.Flood.FloodAccepted) / r.Phase.Seconds()
	fmt.Fprintf(w, "  flooding tenant      accepted %d (%.0f events/s of %.0f offered), stored %d, distinct ids %d, all stored %.1fs after the phase\n",
		r.Flood.FloodAccepted, admitted, r.Flood.FloodOffered, r.Flood.FloodStored, r.Flood.FloodDistinct, r.Flood.FloodDrain.Seconds())
	fmt.Fprintf(w, "  other tenants        %d events without the flood, %d with it, all stored\n", r.Calm.Sent, r.Flood.Sent)
	fmt.Fprintf(w, "  emitter              %d deferrals by the tenant rate, %d Emit calls waited on a full tenant share, %d refused (calls still blocked when the phase ended)\n",
		r.Emitter.TenantDeferrals, r.Emitter.TenantFull, r.Emitter.Dropped)
}
