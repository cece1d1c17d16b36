package store

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestTenantReads: the tenant-scoped reads return exactly the rows of the
// tenants asked, on one node and through the Distributed tables of two
// shards (the tenant list travels to each shard as an external table).
func TestTenantReads(t *testing.T) {
	for _, l := range []struct {
		name string
		open func(*testing.T) *Store
	}{
		{"one_node", openTest},
		{"two_shards", func(t *testing.T) *Store { st, _ := openCluster(t); return st }},
	} {
		t.Run(l.name, func(t *testing.T) { testTenantReads(t, l.open(t)) })
	}
}

func testTenantReads(t *testing.T, st *Store) {
	ctx := context.Background()
	h := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	tenants := []string{"acme", "beta", "gamma", "delta", "eps"}
	var rows []Row
	for i, tenant := range tenants {
		for m := range 3 {
			rows = append(rows, row(tenant, tenant+string(rune('a'+m)), h.Add(time.Duration(m)*time.Hour+time.Duration(i)*time.Minute), "1"))
		}
	}
	if err := st.InsertEvents(ctx, rows, h); err != nil {
		t.Fatal(err)
	}
	from, to := h.Add(-time.Hour), h.Add(4*time.Hour)

	listed, err := st.UsageTenants(ctx, from, to)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"acme", "beta", "delta", "eps", "gamma"}; !slices.Equal(listed, want) {
		t.Errorf("UsageTenants: got %v, want %v", listed, want)
	}
	if listed, err := st.UsageTenants(ctx, h.Add(time.Hour), h.Add(time.Hour+2*time.Minute)); err != nil || !slices.Equal(listed, []string{"acme", "beta"}) {
		t.Errorf("UsageTenants of minutes 60-61: got %v, %v; want [acme beta]", listed, err)
	}

	for _, tc := range []struct {
		name string
		only []string
		want []string // tenants whose rows come back, in order
	}{
		{"two", []string{"gamma", "acme"}, []string{"acme", "gamma"}},
		{"one", []string{"eps"}, []string{"eps"}},
		{"unknown", []string{"zeta"}, nil},
		{"none", []string{}, nil},
		{"nil", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rolled []string
			if err := st.RollupsOf(ctx, tc.only, from, to, func(r UsageRow) error {
				if !slices.Contains(rolled, r.TenantID) {
					rolled = append(rolled, r.TenantID)
				}
				if r.Count != 1 || r.Cost != 1 {
					t.Errorf("RollupsOf %s: got %+v, want count 1, cost 1", tc.only, r)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			slices.Sort(rolled)
			if !slices.Equal(rolled, tc.want) {
				t.Errorf("RollupsOf(%v): rows of %v, want %v", tc.only, rolled, tc.want)
			}
			var hourly []string
			n := 0
			if err := st.HourlyCountsOf(ctx, tc.only, from, to, func(c HourlyCount) error {
				n++
				if !slices.Contains(hourly, c.TenantID) {
					hourly = append(hourly, c.TenantID)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(hourly, tc.want) || n != 3*len(tc.want) {
				t.Errorf("HourlyCountsOf(%v): %d hours of %v, want 3 each of %v", tc.only, n, hourly, tc.want)
			}
		})
	}
}
