package emit

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
)

// subjectCounts returns the stream's message count per tenant.
func subjectCounts(t *testing.T, s jetstream.Stream) map[string]uint64 {
	t.Helper()
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(event.UsageSubjects))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for subj, n := range info.State.Subjects {
		tenant, _, _ := event.ParseSubject(subj)
		got[tenant] += n
	}
	return got
}

// TestFloodingTenantWaitsAlone: one tenant emits far past TenantRate
// while ten others emit a few events each. The flooding tenant's Emit
// blocks once its share is full; the others' calls return at once and
// their events reach the stream while the flood is still queued; in the
// end every flood event is in the stream exactly once. Both publishing
// paths.
func TestFloodingTenantWaitsAlone(t *testing.T) {
	for _, fast := range []bool{false, true} {
		t.Run(fmt.Sprintf("fast=%v", fast), func(t *testing.T) {
			_, nc, s := setupBatched(t, fast)
			cfg := DefaultConfig()
			cfg.BufferSize, cfg.TenantBuffer, cfg.TenantRate, cfg.TenantBurst = 1000, 100, 500, 50
			e, err := New(nc, cfg)
			if err != nil {
				t.Fatal(err)
			}
			const floodN, others, perOther = 1000, 10, 10
			flooded := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				for i := range floodN {
					ev := event.Event{ID: fmt.Sprintf("f%d", i), TenantID: "flood", Kind: "api_request", Quantity: 1}
					if err := e.Emit(ctx, ev); err != nil {
						flooded <- err
						return
					}
				}
				flooded <- nil
			}()
			deadline := time.Now().Add(5 * time.Second)
			for e.Stats().TenantFull == 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if e.Stats().TenantFull == 0 {
				t.Fatal("the flooding tenant never filled its share")
			}
			start := time.Now()
			for o := range others {
				for i := range perOther {
					ev := event.Event{ID: fmt.Sprintf("o%d-%d", o, i), TenantID: fmt.Sprintf("other%d", o), Kind: "api_request", Quantity: 1}
					if err := e.Emit(ctxT(t, time.Second), ev); err != nil {
						t.Fatalf("Emit for another tenant during the flood: %v", err)
					}
				}
			}
			if d := time.Since(start); d > 200*time.Millisecond {
				t.Errorf("the other tenants' %d Emit calls took %v, want them not held up (< 200ms)", others*perOther, d)
			}
			var counts map[string]uint64
			for {
				counts = subjectCounts(t, s)
				all := true
				for o := range others {
					all = all && counts[fmt.Sprintf("other%d", o)] == perOther
				}
				if all {
					break
				}
				if time.Since(start) > time.Second {
					t.Fatalf("after 1s the stream holds %v; want every other tenant's %d events", counts, perOther)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if counts["flood"] >= floodN {
				t.Errorf("the flood was all in the stream before the others (%d); the rate did not hold it back", counts["flood"])
			}
			if err := <-flooded; err != nil {
				t.Fatalf("flooding tenant's Emit: %v", err)
			}
			if err := e.Close(ctxT(t, 30*time.Second)); err != nil {
				t.Fatal(err)
			}
			if got := subjectCounts(t, s)["flood"]; got != floodN {
				t.Errorf("got %d flood events in the stream, want %d", got, floodN)
			}
			st := e.Stats()
			if st.Published != floodN+others*perOther || st.Dropped != 0 || st.TenantDeferrals == 0 {
				t.Errorf("stats %+v: want %d published, 0 dropped, some deferrals", st, floodN+others*perOther)
			}
		})
	}
}
