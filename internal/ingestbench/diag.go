package ingestbench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/loadgen"
	"github.com/tenantguard/tenantguard/collector/store"
)

// chCounterNames are the ClickHouse profile events the bench reads before
// and after the throughput phase, to say where the server's CPU went.
var chCounterNames = []string{"Query", "SelectQuery", "InsertQuery", "InsertedRows", "Merge", "MergedRows",
	"MergesTimeMilliseconds", "CompressedReadBufferBytes", "UserTimeMicroseconds"}

// chCounters reads the server-wide profile events named in chCounterNames
// (system.events, cumulative since the server started).
func chCounters(ctx context.Context, st *store.Store) (map[string]uint64, error) {
	rows, err := st.Conn().Query(ctx, "SELECT event, value FROM system.events")
	if err != nil {
		return nil, fmt.Errorf("read system.events: %w", err)
	}
	defer rows.Close()
	out := make(map[string]uint64, len(chCounterNames))
	for rows.Next() {
		var name string
		var v uint64
		if err := rows.Scan(&name, &v); err != nil {
			return nil, fmt.Errorf("read system.events: %w", err)
		}
		if slices.Contains(chCounterNames, name) {
			out[name] = v
		}
	}
	return out, rows.Err()
}

// ServerWork is what ClickHouse did during the throughput phase, from its
// profile events, and the collector's inserts from its own metrics.
type ServerWork struct {
	Inserts, Selects       uint64 // queries
	InsertedRows           uint64
	ReadBytes              uint64 // uncompressed bytes read by queries and merges
	Merges, MergedRows     uint64
	MergeSeconds           float64 // merges' elapsed time, summed
	QueryUserSeconds       float64 // user CPU of query threads (0 where the server does not count it)
	CollectorBatches       float64 // inserts of tenantguard_collector_batch_rows
	CollectorRowsPerInsert float64
}

func serverWork(before, after map[string]uint64) ServerWork {
	d := func(k string) uint64 { return after[k] - before[k] }
	return ServerWork{Inserts: d("InsertQuery"), Selects: d("SelectQuery"), InsertedRows: d("InsertedRows"),
		ReadBytes: d("CompressedReadBufferBytes"), Merges: d("Merge"), MergedRows: d("MergedRows"),
		MergeSeconds: float64(d("MergesTimeMilliseconds")) / 1e3, QueryUserSeconds: float64(d("UserTimeMicroseconds")) / 1e6}
}

// scrapeHistogram returns the _sum and _count of a histogram from a
// Prometheus text endpoint.
func scrapeHistogram(ctx context.Context, url, name string) (sum, count float64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var dst *float64
		switch {
		case strings.HasPrefix(line, name+"_sum "):
			dst = &sum
		case strings.HasPrefix(line, name+"_count "):
			dst = &count
		default:
			continue
		}
		v, perr := strconv.ParseFloat(strings.TrimSpace(line[strings.IndexByte(line, ' '):]), 64)
		if perr != nil {
			return 0, 0, fmt.Errorf("parse %q: %w", line, perr)
		}
		*dst = v
	}
	return sum, count, sc.Err()
}

// The bench's own queries: the latency probes' poll and the wait for the
// last row.
const (
	probeQuery = "SELECT id FROM tenantguard.events WHERE tenant_id = 'probe' AND time >= now() - 600"
	countQuery = "SELECT count() FROM tenantguard.events"
)

// benchPolls counts the bench's own queries during a phase.
type benchPolls struct{ probes, counts atomic.Int64 }

// priceBenchQueries estimates the ClickHouse CPU seconds of probes probe
// polls and counts row counts: it runs up to 200 of each against the
// table as the run left it and scales the server's CPU per query, less
// its CPU over as long a spell without queries.
func priceBenchQueries(ctx context.Context, st *store.Store, chPID int, probes, counts int64) (float64, error) {
	price := func(q string, n int64) (float64, error) {
		k := min(n, 200)
		if k == 0 {
			return 0, nil
		}
		cpu0, start := procCPU(chPID), time.Now()
		for range k {
			rows, err := st.Conn().Query(ctx, q)
			if err != nil {
				return 0, fmt.Errorf("price the bench's queries: %w", err)
			}
			for rows.Next() {
			}
			rows.Close()
		}
		busy, spent := procCPU(chPID)-cpu0, time.Since(start)
		// What the server does meanwhile anyway (merges of the run's
		// parts) is measured over as long a quiet spell and taken off.
		cpu1 := procCPU(chPID)
		select {
		case <-time.After(spent):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		idle := procCPU(chPID) - cpu1
		return max(busy-idle, 0) / float64(k) * float64(n), nil
	}
	p, err := price(probeQuery, probes)
	if err != nil {
		return 0, err
	}
	c, err := price(countQuery, counts)
	return p + c, err
}

// discard is an emitter that drops every event.
type discard struct{}

func (discard) Emit(context.Context, event.Event) error { return nil }

// generatorCPU is this process's CPU seconds to generate cfg.Events events
// as the throughput phase does, handing each to an emitter that drops it.
func generatorCPU(ctx context.Context, cfg Config) (float64, error) {
	lc := loadgen.DefaultConfig()
	lc.Tenants, lc.Rate, lc.Count, lc.TenantPrefix, lc.Seed = cfg.Tenants, 0, cfg.Events, "t", uint64(cfg.Events)
	gen, err := loadgen.NewGenerator(lc)
	if err != nil {
		return 0, err
	}
	cpu0 := selfCPU()
	if _, err := gen.Run(ctx, discard{}, nil); err != nil {
		return 0, err
	}
	return selfCPU() - cpu0, nil
}
