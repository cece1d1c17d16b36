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
	"time"

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
