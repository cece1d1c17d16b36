package anomaly_test

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/collector/store"
)

// countingReader is the store, counting the usage rows its reads pass on
// per tenant, whichever read it is.
type countingReader struct {
	*store.Store
	mu   sync.Mutex
	rows map[string]int
}

func (c *countingReader) saw(tenant string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rows[tenant]++
}

func (c *countingReader) Rollups(ctx context.Context, from, to time.Time, fn func(store.UsageRow) error) error {
	return c.Store.Rollups(ctx, from, to, func(r store.UsageRow) error { c.saw(r.TenantID); return fn(r) })
}

func (c *countingReader) RollupsOf(ctx context.Context, tenants []string, from, to time.Time, fn func(store.UsageRow) error) error {
	return c.Store.RollupsOf(ctx, tenants, from, to, func(r store.UsageRow) error { c.saw(r.TenantID); return fn(r) })
}

func (c *countingReader) HourlyCounts(ctx context.Context, from, to time.Time, fn func(store.HourlyCount) error) error {
	return c.Store.HourlyCounts(ctx, from, to, func(h store.HourlyCount) error { c.saw(h.TenantID); return fn(h) })
}

func (c *countingReader) HourlyCountsOf(ctx context.Context, tenants []string, from, to time.Time, fn func(store.HourlyCount) error) error {
	return c.Store.HourlyCountsOf(ctx, tenants, from, to, func(h store.HourlyCount) error { c.saw(h.TenantID); return fn(h) })
}

// TestHandoverReadsOnlyTakenTenants: a handover reads the usage rows of
// the tenants it takes over and no one else's, so a replica taking a third
// of 10,000 tenants does not read and drop the other two thirds; the
// start-up warm start (every tenant) still reads everyone.
func TestHandoverReadsOnlyTakenTenants(t *testing.T) {
	f := newFleet(t)
	now := time.Date(2026, 3, 20, 12, 0, 30, 0, time.UTC)
	var rs []anomaly.Rollup
	for _, tenant := range []string{"a", "b", "c", "d"} {
		rs = append(rs, minutes(tenant, now.Add(-5*time.Hour), now.Truncate(time.Minute), 10)...)
	}
	f.store(nil, rs...)

	for _, tc := range []struct {
		name  string
		owns  func(string) bool
		want  []string
		taken int
	}{
		{"one tenant", only("b"), []string{"b"}, 1},
		{"all but one", not("c"), []string{"a", "b", "d"}, 3},
		{"every tenant", func(string) bool { return true }, []string{"a", "b", "c", "d"}, 4},
		{"no tenant with usage", only("zz"), nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &countingReader{Store: f.st, rows: map[string]int{}}
			h, err := f.detector("r").Handover(f.ctx, src, tc.owns, now)
			if err != nil {
				t.Fatal(err)
			}
			if h.Adopted != tc.taken {
				t.Errorf("adopted %d tenants, want %d", h.Adopted, tc.taken)
			}
			read := slices.Sorted(maps.Keys(src.rows))
			if !slices.Equal(read, tc.want) {
				t.Errorf("read the usage rows of %v (%v), want only %v's", read, src.rows, tc.want)
			}
		})
	}
}
