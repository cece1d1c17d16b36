package ingestbench

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestPrintKeepsComparableLines: the lines scripts compare from run to run
// stay as they were, and the bench's own costs come on lines of their own.
func TestPrintKeepsComparableLines(t *testing.T) {
	r := &Result{Events: 1000, Seconds: 1, EventsPerSec: 1000, CPUCollector: 0.01, CPUClickHouse: 0.02, CPULoadgenNATS: 0.03,
		RawPublishPerSec: 2000, RawFastBatchPerSec: 4000, RawRoundTrip: 1500, RawInsertPerSec: 5000,
		RawAckAllPerSec: 8000, BareInsertPerSec: 10000, BareInsertBlock: 50000,
		CPUGenerator: 0.001, ProbePolls: 7, CountPolls: 3, CPUBenchQueries: 0.005,
		Work: ServerWork{Inserts: 2, CollectorBatches: 2, CollectorRowsPerInsert: 500}}
	var b bytes.Buffer
	r.Print(&b)
	for _, want := range []string{
		"  sustained                  1000 events/s\n",
		"  CPU during the run     collector 0.0s (10.0 µs/event)  ClickHouse 0.0s (20.0 µs/event)  loadgen+embedded NATS 0.0s (30.0 µs/event)\n",
		"  JetStream async publish        2000 msgs/s   pipeline ratio 0.50\n",
		"the load generator's own event building 0.0s (1.0 µs/event",
		"without it 29.0 µs/event",
		"7 probe polls, 3 row counts: ClickHouse about 0.0s (5.0 µs/event",
		"ClickHouse without them 15.0 µs/event",
		"2 inserts (the collector's: 2, 500 rows each)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}

func TestServerWork(t *testing.T) {
	before := map[string]uint64{"InsertQuery": 5, "SelectQuery": 10, "MergedRows": 100, "MergesTimeMilliseconds": 1000}
	after := map[string]uint64{"InsertQuery": 8, "SelectQuery": 30, "MergedRows": 400, "MergesTimeMilliseconds": 3500}
	w := serverWork(before, after)
	if w.Inserts != 3 || w.Selects != 20 || w.MergedRows != 300 || w.MergeSeconds != 2.5 {
		t.Fatalf("got %+v, want 3 inserts, 20 selects, 300 merged rows in 2.5s", w)
	}
}

func TestScrapeHistogram(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("# TYPE tenantguard_collector_batch_rows histogram\n" +
			"tenantguard_collector_batch_rows_bucket{le=\"1\"} 0\n" +
			"tenantguard_collector_batch_rows_sum 37500\n" +
			"tenantguard_collector_batch_rows_count 2\n" +
			"tenantguard_collector_batch_rows_other_sum 1\n"))
	}))
	defer srv.Close()
	sum, n, err := scrapeHistogram(context.Background(), srv.URL, "tenantguard_collector_batch_rows")
	if err != nil {
		t.Fatal(err)
	}
	if sum != 37500 || n != 2 {
		t.Fatalf("got sum %v count %v, want 37500 and 2", sum, n)
	}
}
