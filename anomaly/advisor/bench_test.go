package advisor

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// BenchmarkReportWeek judges a week of 500 tenants, each with an
// api_request, a db_query and a compute_seconds event every hour (252,000
// events): the query and the judgement, as the daemon runs them hourly.
func BenchmarkReportWeek(b *testing.B) {
	const tenants = 500
	st := teststore.New(b)
	var rows []store.Row
	for h := start; h.Before(end); h = h.Add(time.Hour) {
		for n := 0; n < tenants; n++ {
			tenant := fmt.Sprintf("t%03d", n)
			for i, kind := range []string{event.KindAPIRequest, event.KindDBQuery, event.KindComputeSeconds} {
				rows = append(rows, store.Row{Event: &event.Event{ID: fmt.Sprintf("%s-%d-%d", tenant, h.Unix(), i), TenantID: tenant,
					Kind: kind, Time: h.Add(time.Duration(n%60) * time.Minute), Quantity: 1, LatencyMs: float64(1 + n%7)},
					UnitPrice: decimal.Zero, Cost: decimal.Zero})
			}
		}
	}
	if err := st.InsertEvents(context.Background(), rows, time.Now()); err != nil {
		b.Fatal(err)
	}
	cfg := DefaultConfig()
	from, to := cfg.LastWindow(now)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r, err := cfg.Report(context.Background(), st, from, to)
		if err != nil || len(r.Tenants) != tenants {
			b.Fatalf("%v, %d tenants", err, len(r.Tenants))
		}
	}
	b.ReportMetric(float64(tenants*168)/(float64(b.Elapsed().Seconds())/float64(b.N)), "tenant-hours/s")
}
