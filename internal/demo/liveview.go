package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/daemon"
)

// liveView prints the demo's terminal table: the tenants to watch (the
// throttled, the alerting, the noisy one, then the busiest), their rate,
// P95 latency, cost so far, and the pipeline's totals.
type liveView struct {
	out      io.Writer
	d        *daemon.Daemon
	noisy    string
	currency string   // shown with COST
	tenants  int      // tenants the generator sends for, 0 if unknown
	header   []string // lines under the title
	tty      bool
	started  time.Time
	rejected func(tenant string) uint64 // requests the limiter refused so far
	lastRej  map[string]uint64
	lastAt   time.Time
}

// maxRows is how many tenants the view shows at least; every throttled or
// alerting tenant is shown even beyond it.
const maxRows = 12

func newLiveView(out io.Writer, d *daemon.Daemon, noisy string) *liveView {
	tty := false
	if f, ok := out.(*os.File); ok {
		fi, err := f.Stat()
		tty = err == nil && fi.Mode()&os.ModeCharDevice != 0
	}
	return &liveView{out: out, d: d, noisy: noisy, tty: tty, started: time.Now()}
}

type tenantRow struct {
	tenant string
	rate   float64
	rej    float64
	p95    float64
	cost   decimal.Decimal
	guard  daemon.Guard
}

// pickRows orders rows for the view (throttled first, then alerting, then
// the noisy tenant, then by rate, busiest first) and keeps the first
// maxRows, or more when more tenants are throttled or alerting.
func pickRows(rows []tenantRow, noisy string) []tenantRow {
	watch := func(r tenantRow) int {
		switch {
		case r.guard.Throttled:
			return 0
		case r.guard.Alerting:
			return 1
		case r.tenant == noisy:
			return 2
		}
		return 3
	}
	sort.SliceStable(rows, func(i, j int) bool {
		wi, wj := watch(rows[i]), watch(rows[j])
		if wi != wj {
			return wi < wj
		}
		if rows[i].rate != rows[j].rate {
			return rows[i].rate > rows[j].rate
		}
		return rows[i].tenant < rows[j].tenant
	})
	n := min(len(rows), maxRows)
	for n < len(rows) && watch(rows[n]) < 2 {
		n++
	}
	return rows[:n]
}

func (v *liveView) run(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			out, err := v.render(qctx)
			cancel()
			if err != nil {
				out = "live view: " + err.Error() + "\n"
			}
			if v.tty {
				out = "\033[H\033[2J" + out
			}
			fmt.Fprint(v.out, out)
		}
	}
}

func (v *liveView) render(ctx context.Context) (string, error) {
	const window = 30
	conn, events, usage := v.d.Store().Conn(), v.d.Store().Table("events"), v.d.Store().Table("usage_1m")
	rows, err := conn.Query(ctx, "SELECT tenant_id, count() / ? AS rate, quantileIf(0.95)(latency_ms, kind = 'api_request') AS p95 FROM "+events+
		" WHERE time >= now() - ? GROUP BY tenant_id", float64(window), window)
	if err != nil {
		return "", err
	}
	guarded := v.d.Guarded()
	var list []tenantRow
	seen := map[string]bool{}
	for rows.Next() {
		var r tenantRow
		if err := rows.Scan(&r.tenant, &r.rate, &r.p95); err != nil {
			rows.Close()
			return "", err
		}
		r.guard, seen[r.tenant] = guarded[r.tenant], true
		list = append(list, r)
	}
	rows.Close()
	active := len(list)
	// Tenants to watch that sent nothing in the window are shown too.
	for t, g := range guarded {
		if !seen[t] {
			list, seen[t] = append(list, tenantRow{tenant: t, guard: g}), true
		}
	}
	if v.noisy != "" && !seen[v.noisy] {
		list = append(list, tenantRow{tenant: v.noisy})
	}
	list = pickRows(list, v.noisy)
	tenants := make([]any, len(list))
	for i, r := range list {
		tenants[i] = r.tenant
	}
	costs := map[string]decimal.Decimal{}
	if len(tenants) > 0 {
		crow, err := conn.Query(ctx, "SELECT tenant_id, sum(cost) FROM "+usage+" WHERE tenant_id IN ? GROUP BY tenant_id", clickhouse.GroupSet{Value: tenants})
		if err != nil {
			return "", err
		}
		for crow.Next() {
			var t string
			var c decimal.Decimal
			if err := crow.Scan(&t, &c); err == nil {
				costs[t] = c
			}
		}
		crow.Close()
	}
	var total uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+events).Scan(&total); err != nil {
		return "", err
	}
	dlq := uint64(0)
	if s, err := v.d.JetStream().Stream(ctx, event.DLQStream); err == nil {
		if info, err := s.Info(ctx); err == nil {
			dlq = info.State.Msgs
		}
	}
	v.rejectionRates(list)
	var b strings.Builder
	fmt.Fprintf(&b, "tenantguard dev --demo   up %s   events stored %d   DLQ %d   (Ctrl-C or q to stop)\n",
		time.Since(v.started).Truncate(time.Second), total, dlq)
	for _, h := range v.header {
		fmt.Fprintln(&b, h)
	}
	of := fmt.Sprintf("%d active in the last %ds", active, window)
	if v.tenants > 0 {
		of = fmt.Sprintf("%d tenants (%s)", v.tenants, of)
	}
	fmt.Fprintf(&b, "\nshowing %d of %s: throttled first, then alerting, then the busiest\n", len(list), of)
	costHead := "COST"
	if v.currency != "" {
		costHead = "COST " + v.currency
	}
	fmt.Fprintf(&b, "%-16s %10s %11s %11s %14s  %s\n", "TENANT", "STORED/s", "REJECTED/s", "P95 API ms", costHead, "STATUS")
	for _, r := range list {
		mark := " "
		if r.tenant == v.noisy {
			mark = "*"
		}
		fmt.Fprintf(&b, "%-15s%s %10.1f %11.1f %11.1f %14s  %s\n", r.tenant, mark, r.rate, r.rej, r.p95, costs[r.tenant].StringFixed(4), r.guard.Status)
	}
	fmt.Fprintf(&b, "\n* the noisy tenant. STORED/s: events stored in the last %ds; REJECTED/s: requests the limiter SDK refused\n"+
		"since the last refresh; COST: since the data dir was created; STATUS: live decision and firing alerts\n", window)
	return b.String(), nil
}

// rejectionRates fills each row's rejected requests per second since the
// previous refresh.
func (v *liveView) rejectionRates(list []tenantRow) {
	if v.rejected == nil {
		return
	}
	now := time.Now()
	dt := now.Sub(v.lastAt).Seconds()
	if v.lastRej == nil {
		v.lastRej = map[string]uint64{}
	}
	for i := range list {
		n := v.rejected(list[i].tenant)
		if prev, ok := v.lastRej[list[i].tenant]; ok && dt > 0 {
			list[i].rej = float64(n-prev) / dt
		}
		v.lastRej[list[i].tenant] = n
	}
	v.lastAt = now
}
