package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/anomaly/advisor"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

// TestAdviseExitCodes: a day with a heavy tenant exits 1 with its
// recommendation in text and JSON, a day of equal tenants exits 0, bad
// usage and an unreachable ClickHouse exit 2.
func TestAdviseExitCodes(t *testing.T) {
	env := newCLIEnv(t)
	day1 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	day2 := day1.Add(24 * time.Hour)
	var rows []store.Row
	add := func(tenant string, at time.Time) {
		rows = append(rows, costRow(tenant, fmt.Sprintf("%s-%d", tenant, len(rows)), at, "0.01"))
	}
	for h := 0; h < 24; h++ {
		hour := day1.Add(time.Duration(h) * time.Hour)
		for i := 0; i < 3; i++ {
			add("whale", hour.Add(time.Duration(i)*time.Minute)) // 3 of 7 events every hour of day 1
		}
		for i, tenant := range []string{"m1", "m2", "m3", "m4"} {
			add(tenant, hour.Add(time.Duration(10+i)*time.Minute)) // 1 of 7 each
		}
		for _, tenant := range []string{"a", "b", "c", "d", "e"} {
			add(tenant, day2.Add(time.Duration(h)*time.Hour)) // 20% each on day 2: not over
		}
	}
	env.insert(t, rows...)

	out, stderr, code := env.run(t, "", "advise", "--from", "2026-11-01", "--to", "2026-11-02", "--format", "json")
	if code != 1 {
		t.Fatalf("heavy day, json: got exit %d (%s), want 1", code, stderr)
	}
	var rep advisor.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if rep.Hours != 24 || rep.Heavy != 1 || len(rep.Tenants) != 5 || rep.Tenants[0].TenantID != "whale" ||
		rep.Tenants[0].Recommendation != advisor.MoveToDedicated || rep.Tenants[1].Recommendation != advisor.None {
		t.Fatalf("json report: got %+v", rep)
	}
	if u := rep.Tenants[0].Resources[0]; u.Resource != advisor.ResourceEvents || u.Share != 3.0/7 || u.HoursOver != 24 {
		t.Errorf("whale events: got %+v, want share 3/7 over in 24 hours", u)
	}

	out, _, code = env.run(t, "", "advise", "--from", "2026-11-01T00:00:00Z", "--to", "2026-11-02T00:00:00Z")
	if code != 1 || !strings.Contains(out, "whale") || !strings.Contains(out, "move to dedicated") ||
		!strings.Contains(out, "24/24 (100.0%)") || strings.Contains(out, "m1") {
		t.Fatalf("heavy day, text: exit %d\n%s", code, out)
	}

	out, stderr, code = env.run(t, "", "advise", "--from", "2026-11-02", "--to", "2026-11-03")
	if code != 0 || !strings.Contains(out, "5 tenants: 0 to move to dedicated, 0 to watch") {
		t.Fatalf("even day: got exit %d (%s), want 0\n%s", code, stderr, out)
	}

	for _, args := range [][]string{
		{"advise", "--format", "xml"},
		{"advise", "--from", "2026-11-01"},
		{"advise", "--from", "2026-11-02", "--to", "2026-11-01"},
		{"advise", "--from", "2024-01-01", "--to", "2026-01-01"},
	} {
		if _, stderr, code := env.run(t, "", args...); code != 2 {
			t.Errorf("%v: got exit %d (%s), want 2", args, code, stderr)
		}
	}

	// Nothing listens at the address: a runtime error, exit 2, not 0 or 1.
	a := newApp(&strings.Builder{}, &strings.Builder{})
	root := a.root()
	root.SetArgs([]string{"advise", "--timeout", "5s", "--log-level", "error",
		"--clickhouse-addr", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))})
	var ee *exitError
	if err := root.Execute(); !asExit(err, &ee) || ee.code != 2 {
		t.Errorf("unreachable ClickHouse: got %v, want exit 2", err)
	}
}
