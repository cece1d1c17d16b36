package demo

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/internal/daemon"
)

// TestPickRows: throttled tenants come first, then alerting ones, then the
// noisy one, then the busiest; the view keeps maxRows, and every throttled
// or alerting tenant even beyond that.
func TestPickRows(t *testing.T) {
	var rows []tenantRow
	for i := range 20 {
		rows = append(rows, tenantRow{tenant: fmt.Sprintf("t-%02d", i), rate: float64(100 - i)})
	}
	rows[19].guard = daemon.Guard{Throttled: true, Alerting: true}
	rows[18].guard = daemon.Guard{Alerting: true}
	rows[5].rate = 100 // ties with t-00: by name
	rows = append(rows, tenantRow{tenant: "noisy-co", rate: 1})
	got := pickRows(rows, "noisy-co")
	var names []string
	for _, r := range got {
		names = append(names, r.tenant)
	}
	want := "t-19 t-18 noisy-co t-00 t-05 t-01 t-02 t-03 t-04 t-06 t-07 t-08"
	if strings.Join(names, " ") != want {
		t.Errorf("got %s, want %s", strings.Join(names, " "), want)
	}

	// More tenants to watch than rows: all of them are shown.
	var many []tenantRow
	for i := range maxRows + 3 {
		many = append(many, tenantRow{tenant: fmt.Sprintf("a-%02d", i), guard: daemon.Guard{Alerting: true}})
	}
	many = append(many, tenantRow{tenant: "quiet", rate: 500})
	if got := pickRows(many, ""); len(got) != maxRows+3 || got[len(got)-1].tenant == "quiet" {
		t.Errorf("got %d rows (last %s), want the %d alerting tenants and not the quiet one", len(got), got[len(got)-1].tenant, maxRows+3)
	}
}
