package billing

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

func TestEventsExportRoundTrip(t *testing.T) {
	st := teststore.New(t)
	x := newExporter(t, st)
	rows := genRows(5000, 3, t0, t1, 11)
	rows[0].Event.Attrs = map[string]string{"quote": `a"b,c` + "\n", "unicode": "é"}
	rows[0].Event.Route, rows[0].Event.Error, rows[0].Event.StatusCode = "POST /x,y", true, 503
	insert(t, st, rows)
	tenant := rows[0].Event.TenantID
	want := map[string]*event.Event{}
	for _, r := range rows {
		if r.Event.TenantID == tenant {
			want[r.Event.ID] = r.Event
		}
	}

	var buf bytes.Buffer
	var last int64
	n, err := x.Events(context.Background(), &buf, EventsRequest{Tenant: tenant, From: t0, To: t1, Format: FormatNDJSON,
		Progress: func(r int64) { last = r }})
	if err != nil {
		t.Fatal(err)
	}
	if int(n) != len(want) || last != n {
		t.Fatalf("exported %d events (progress %d), want %d", n, last, len(want))
	}
	sc := bufio.NewScanner(&buf)
	var prev time.Time
	seen := 0
	for sc.Scan() {
		var e event.Event
		if verr := event.Decode(sc.Bytes(), &e); verr != nil {
			t.Fatalf("line %d does not decode as wire format v1: %v", seen, verr)
		}
		w := want[e.ID]
		if w == nil {
			t.Fatalf("exported event %s of tenant %s was not inserted for %s", e.ID, e.TenantID, tenant)
		}
		if e.TenantID != w.TenantID || e.Kind != w.Kind || !e.Time.Equal(w.Time.Truncate(time.Millisecond)) ||
			e.Quantity != w.Quantity || e.Route != w.Route || e.Error != w.Error || e.StatusCode != w.StatusCode ||
			e.LatencyMs != w.LatencyMs || len(e.Attrs) != len(w.Attrs) {
			t.Fatalf("got %+v, want %+v", e, *w)
		}
		for k, v := range w.Attrs {
			if e.Attrs[k] != v {
				t.Fatalf("attr %s: got %q, want %q", k, e.Attrs[k], v)
			}
		}
		if e.Time.Before(prev) {
			t.Fatalf("events out of time order at %s", e.ID)
		}
		prev = e.Time
		seen++
	}
	if seen != len(want) {
		t.Fatalf("decoded %d lines, want %d", seen, len(want))
	}

	buf.Reset()
	if _, err := x.Events(context.Background(), &buf, EventsRequest{Tenant: tenant, From: t0, To: t1, Format: FormatCSV}); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(recs[0], EventColumns) || len(recs)-1 != len(want) {
		t.Fatalf("csv header %v and %d rows, want %v and %d", recs[0], len(recs)-1, EventColumns, len(want))
	}
	if got := strings.Join(recs[0], ","); got != "id,tenant_id,kind,time,quantity,service,route,user_id,latency_ms,status_code,error,attrs,plan,unit_price,cost,price_version" {
		t.Fatalf("csv header changed: %s", got)
	}
	for _, r := range recs[1:] {
		if r[1] != tenant {
			t.Fatalf("csv leaks tenant %s", r[1])
		}
		if r[0] == rows[0].Event.ID && (r[6] != "POST /x,y" || r[11] != `{"quote":"a\"b,c\n","unicode":"é"}` || r[10] != "true") {
			t.Fatalf("csv row %v does not carry the awkward fields", r)
		}
	}
}

// heapWriter counts bytes and samples the live heap (after a collection)
// as the export writes.
type heapWriter struct {
	n, writes int64
	peak      uint64
}

func (h *heapWriter) Write(p []byte) (int, error) {
	h.n += int64(len(p))
	h.writes++
	if h.writes%128 == 0 { // every 8 MB: collect, then read the live heap
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		h.peak = max(h.peak, ms.HeapAlloc)
	}
	return len(p), nil
}

var _ io.Writer = (*heapWriter)(nil)

// TestEventsExportMemoryIsFlat exports far more bytes than the heap may grow:
// a client that buffered the result would fail it.
func TestEventsExportMemoryIsFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("inserts 300k events")
	}
	st := teststore.New(t)
	x := newExporter(t, st)
	long := strings.Repeat("x", 300)
	const chunk = 100000
	for done := 0; done < 3*chunk; done += chunk {
		rows := genRows(chunk, 1, t0, t1, uint64(done))
		for _, r := range rows {
			r.Event.ID = r.Event.ID + "-" + string(rune('a'+done/chunk))
			r.Event.Attrs = map[string]string{"prompt": long}
		}
		insert(t, st, []store.Row(rows))
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	w := &heapWriter{}
	n, err := x.Events(context.Background(), w, EventsRequest{Tenant: "tenant-0000", From: t0, To: t1, Format: FormatNDJSON})
	if err != nil {
		t.Fatal(err)
	}
	growth := int64(w.peak) - int64(base)
	t.Logf("%d events, %d MB written, live heap grew at most %d MB", n, w.n>>20, growth>>20)
	if n != 3*chunk {
		t.Fatalf("exported %d events, want %d", n, 3*chunk)
	}
	if growth > w.n/4 || growth > 32<<20 {
		t.Fatalf("heap grew %d MB while writing %d MB: the export is not streaming", growth>>20, w.n>>20)
	}
}
