package store

import (
	"context"
	"testing"
	"time"
)

// TestLatestAnomalies checks that each episode comes back once, in its
// latest state (a resolution wins over its firing row, whatever order
// they were written in), only for the metrics asked and from since on.
func TestLatestAnomalies(t *testing.T) {
	st := openTest(t)
	ctx := context.Background()
	at := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	epoch := time.Unix(0, 0).UTC()
	row := func(fp, tenant, metric, status string, starts, updated time.Time) AnomalyRow {
		ends := epoch
		if status == "resolved" {
			ends = updated
		}
		return AnomalyRow{Fingerprint: fp, TenantID: tenant, Metric: metric, Kind: "api_request", Status: status,
			Severity: "warning", Observed: 3, Baseline: 1, Ratio: 3, StartsAt: starts, EndsAt: ends, Summary: fp, UpdatedAt: updated}
	}
	// Written in two inserts, the resolution first: order must not matter.
	if err := st.InsertAnomalies(ctx, []AnomalyRow{row("done", "acme", "usage", "resolved", at, at.Add(11*time.Minute))}); err != nil {
		t.Fatal(err)
	}
	if err := st.InsertAnomalies(ctx, []AnomalyRow{
		row("done", "acme", "usage", "firing", at, at.Add(time.Minute)),
		row("open", "acme", "cost", "firing", at.Add(time.Minute), at.Add(2*time.Minute)),
		row("old", "acme", "usage", "firing", at.Add(-48*time.Hour), at.Add(-48*time.Hour)),
		row("other", "beta", "heavy_tenant", "firing", at, at),
	}); err != nil {
		t.Fatal(err)
	}
	got, err := st.LatestAnomalies(ctx, []string{"usage", "cost"}, at.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ fp, status string }{{"done", "resolved"}, {"open", "firing"}}
	if len(got) != len(want) {
		t.Fatalf("got %d episodes (%+v), want %d", len(got), got, len(want))
	}
	for i, w := range want {
		if got[i].Fingerprint != w.fp || got[i].Status != w.status {
			t.Errorf("episode %d: got %s %s, want %s %s", i, got[i].Fingerprint, got[i].Status, w.fp, w.status)
		}
	}
	if g := got[1]; g.TenantID != "acme" || g.Metric != "cost" || g.Kind != "api_request" || !g.StartsAt.Equal(at.Add(time.Minute)) {
		t.Errorf("open episode: got %+v", g)
	}
	if _, err := st.LatestAnomalies(ctx, []string{""}, at); err == nil {
		t.Error("an empty metric: got no error, want one")
	}
}
