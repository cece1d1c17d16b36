package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

// BenchmarkInsertEvents inserts batches of 10 000 events over 100 tenants
// into one node, and through the Distributed table into two shards (both
// on this machine), and reports events/s and, for each batch, the time the
// dedup horizon's lookup of its keys takes.
func BenchmarkInsertEvents(b *testing.B) {
	for _, layout := range []string{"single node", "two shards"} {
		b.Run(layout, func(b *testing.B) {
			cfg := DefaultConfig()
			if layout == "single node" {
				srv, db := testenv.ClickHouse(b)
				cfg.Addr, cfg.Database = []string{srv.Addr}, db
			} else {
				c, db := testenv.ClickHouseShards(b)
				cfg.Addr, cfg.Database, cfg.Cluster, cfg.Shards = c.Addrs()[:1], db, c.Name, c.Addrs()
			}
			ctx := context.Background()
			st, err := Open(ctx, cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			if _, err := st.Migrate(ctx); err != nil {
				b.Fatal(err)
			}
			const batch = 10000
			at := time.Now().UTC()
			var lookup time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				rows := make([]Row, batch)
				keys := make([]EventKey, batch)
				for j := range rows {
					tenant, id := fmt.Sprintf("t%03d", j%100), fmt.Sprintf("b%d-%d", i, j)
					rows[j] = row(tenant, id, at, "0.0001")
					keys[j] = EventKey{TenantID: tenant, Kind: "api_request", ID: id, Time: at}
				}
				start := time.Now()
				if _, err := st.ExistingIDs(ctx, keys); err != nil {
					b.Fatal(err)
				}
				lookup += time.Since(start)
				if err := st.InsertEvents(ctx, rows, at); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(lookup.Milliseconds())/float64(b.N), "lookup-ms/batch")
		})
	}
}
