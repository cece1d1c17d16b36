package anomaly

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
)

// TestTopUsers: the space-saving counters keep a heavy user among many
// light ones, with its count, and allocate nothing once warm.
func TestTopUsers(t *testing.T) {
	var u topUsers
	for i := range 5000 {
		u.add("light-"+strconv.Itoa(i%500), 10)
		if i%2 == 0 {
			u.add("heavy", 10)
		}
	}
	id, n := u.top()
	if id != "heavy" || n < 2500 || n > 2500+5000/10 {
		t.Fatalf("got %q with %d, want heavy with 2500..3000", id, n)
	}
	if len(u.e) != 10 {
		t.Fatalf("got %d counters, want 10", len(u.e))
	}
	u.reset()
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = "user-" + strconv.Itoa(i)
	}
	for _, id := range ids {
		u.add(id, 10)
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, id := range ids {
			u.add(id, 10)
		}
	})
	if allocs != 0 {
		t.Fatalf("got %v allocs per 100 adds, want 0", allocs)
	}
}

// TestUsageAlertNamesTheHeavyUser: when one user drives a tenant's spike,
// the usage alert names that user with the window's counts.
func TestUsageAlertNamesTheHeavyUser(t *testing.T) {
	d, rec := newTestDetector(t, nil)
	ctx := context.Background()
	for m := range 330 {
		at := t0.Add(time.Duration(m) * time.Minute)
		n := 100
		for i := range n {
			e := event.Event{TenantID: "acme", Kind: "api_request", Quantity: 1, UserID: "u" + strconv.Itoa(i%20),
				Time: at.Add(time.Duration(i) * 500 * time.Millisecond)}
			d.Observe(&e, 0)
		}
		if m >= 300 {
			for i := range 300 {
				e := event.Event{TenantID: "acme", Kind: "api_request", Quantity: 1, UserID: "u_heavy",
					Time: at.Add(time.Duration(i) * 190 * time.Millisecond)}
				d.Observe(&e, 0)
			}
		}
		d.Advance(ctx, at.Add(time.Minute+d.cfg.Lateness))
	}
	got := only(rec.Alerts(), MetricUsage)
	if len(got) == 0 {
		t.Fatal("no usage alert")
	}
	a := got[0]
	if a.Labels[LabelTopUser] != "u_heavy" {
		t.Fatalf("top_user %q, want u_heavy (labels %v)", a.Labels[LabelTopUser], a.Labels)
	}
	n, _ := strconv.Atoi(a.Labels[LabelTopUserEvents])
	total, _ := strconv.Atoi(a.Labels[LabelWindowEvents])
	if total == 0 || float64(n)/float64(total) < 0.6 {
		t.Fatalf("top_user_events %d of window_events %d, want a share of about 0.75", n, total)
	}
}
