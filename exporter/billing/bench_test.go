package billing

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// BenchmarkBillingExport1M exports a month of 1M events over 1k tenants, the
// issue's target (<= 5 s). raw_query is the baseline measured in the same
// run: the same aggregation read and scanned, with nothing written.
//
//	go test ./exporter/billing -run '^$' -bench BillingExport1M -benchtime 3x
func BenchmarkBillingExport1M(b *testing.B) {
	const events, tenants = 1_000_000, 1000
	st := teststore.New(b)
	x := newExporter(b, st)
	start := time.Now()
	insertGen(b, st, events, tenants, t0, t1, 42)
	b.Logf("inserted %d events over %d tenants in %s", events, tenants, time.Since(start).Round(time.Millisecond))
	ctx := context.Background()
	voided := voidSome(b, st, 10_000)

	b.Run("raw_query_events_only", func(b *testing.B) {
		// The aggregation without the corrections side: what netting costs.
		cond, args := timeCond(t0, t1)
		q := "SELECT tenant_id, kind, unit_price, arrayStringConcat(arraySort(groupUniqArray(price_version)), '|'), " +
			"toInt64(count()), sum(quantity), sum(cost) FROM " + x.table("events") + " WHERE " + cond +
			" GROUP BY tenant_id, kind, unit_price ORDER BY tenant_id, kind, unit_price"
		for b.Loop() {
			rows, err := st.Conn().Query(ctx, q, args...)
			if err != nil {
				b.Fatal(err)
			}
			for rows.Next() {
			}
			rows.Close()
		}
		b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})

	b.Run("raw_query", func(b *testing.B) {
		b.ReportAllocs()
		cond, args := timeCond(t0, t1)
		q := fmt.Sprintf(billingQuery, x.table("events"), x.table("corrections"), cond, "")
		args = append(args, args...)
		for b.Loop() {
			rows, err := st.Conn().Query(ctx, q, args...)
			if err != nil {
				b.Fatal(err)
			}
			var (
				tenant, kind, versions     string
				unit, amount, units, nanos decimal.Decimal
				n                          int64
				qty                        float64
			)
			for rows.Next() {
				if err := rows.Scan(&tenant, &kind, &unit, &versions, &n, &qty, &units, &nanos, &amount); err != nil {
					b.Fatal(err)
				}
			}
			rows.Close()
		}
		b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
	for _, f := range []Format{FormatCSV, FormatJSON} {
		b.Run("export_"+string(f), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sum, err := x.Billing(ctx, io.Discard, Request{From: t0, To: t1, Format: f})
				if err != nil {
					b.Fatal(err)
				}
				if sum.Events != events-voided || sum.Tenants != tenants {
					b.Fatalf("exported %d events over %d tenants, want %d over %d", sum.Events, sum.Tenants, events, tenants)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/export")
			b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
	b.Run("export_csv_recorded", func(b *testing.B) {
		// As if the month were over: each export is recorded in
		// billing_exports and compared with the one before it.
		x.now = func() time.Time { return t1.Add(time.Hour) }
		defer func() { x.now = time.Now }()
		for b.Loop() {
			sum, err := x.Billing(ctx, io.Discard, Request{From: t0, To: t1, Format: FormatCSV})
			if err != nil || sum.ExportID == "" {
				b.Fatalf("recorded export: %q %v", sum.ExportID, err)
			}
		}
		b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/export")
	})
}

// voidSome stores void corrections of n of the stored events, as the
// Applier would, and returns n.
func voidSome(b *testing.B, st *store.Store, n int) int64 {
	b.Helper()
	ctx := context.Background()
	rows, err := st.Conn().Query(ctx, "SELECT tenant_id, kind, time, time_ms, id, quantity, unit_price, cost FROM "+
		st.Table("events")+" LIMIT ?", n)
	if err != nil {
		b.Fatal(err)
	}
	var cs []store.CorrectionRow
	for rows.Next() {
		var r store.CorrectionRow
		var ms uint16
		var qty float64
		var cost decimal.Decimal
		if err := rows.Scan(&r.TenantID, &r.Kind, &r.Time, &ms, &r.EventID, &qty, &r.UnitPrice, &cost); err != nil {
			b.Fatal(err)
		}
		r.Time = r.Time.Add(time.Duration(ms) * time.Millisecond)
		r.CorrectionID, r.Seq, r.Action = "v-"+r.EventID, 1, "void"
		r.DeltaCount, r.DeltaQty, r.DeltaCost = -1, -qty, cost.Neg()
		r.Reason, r.By, r.CorrectedAt = "bench", "bench", time.Now()
		cs = append(cs, r)
	}
	rows.Close()
	if err := st.InsertCorrections(ctx, cs); err != nil {
		b.Fatal(err)
	}
	return int64(len(cs))
}

// BenchmarkEventsExport measures the raw-events (portability) export of one
// tenant's 100k events as NDJSON.
func BenchmarkEventsExport(b *testing.B) {
	const events = 100_000
	st := teststore.New(b)
	x := newExporter(b, st)
	insertGen(b, st, events, 1, t0, t1, 9)
	b.ReportAllocs()
	for b.Loop() {
		n, err := x.Events(context.Background(), io.Discard, EventsRequest{Tenant: "tenant-0000", From: t0, To: t1, Format: FormatNDJSON})
		if err != nil || n != events {
			b.Fatalf("exported %d, %v; want %d", n, err, events)
		}
	}
	b.ReportMetric(float64(events)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
