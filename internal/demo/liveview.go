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

// liveView prints the demo's terminal table: the busiest tenants, their
// rate, P95 latency, cost so far, and the pipeline's totals.
type liveView struct {
	out      io.Writer
	d        *daemon.Daemon
	noisy    string
	tty      bool
	started  time.Time
	rejected func(tenant string) uint64 // requests the limiter refused so far
	lastRej  map[string]uint64
	lastAt   time.Time
}

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
		" WHERE time >= now() - ? GROUP BY tenant_id ORDER BY tenant_id = ? DESC, rate DESC LIMIT 12", float64(window), window, v.noisy)
	if err != nil {
		return "", err
	}
	var list []tenantRow
	var tenants []any
	for rows.Next() {
		var r tenantRow
		if err := rows.Scan(&r.tenant, &r.rate, &r.p95); err != nil {
			rows.Close()
			return "", err
		}
		list = append(list, r)
		tenants = append(tenants, r.tenant)
	}
	rows.Close()
	if v.noisy != "" && !containsTenant(list, v.noisy) {
		list = append(list, tenantRow{tenant: v.noisy})
		tenants = append(tenants, v.noisy)
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
	sort.SliceStable(list, func(i, j int) bool { return list[i].rate > list[j].rate })
	var b strings.Builder
	fmt.Fprintf(&b, "tenantguard dev --demo   up %s   events stored %d   DLQ %d   (Ctrl-C to stop)\n\n",
		time.Since(v.started).Truncate(time.Second), total, dlq)
	fmt.Fprintf(&b, "%-16s %10s %11s %11s %14s  %s\n", "TENANT", "STORED/s", "REJECTED/s", "P95 API ms", "COST", "STATUS")
	for _, r := range list {
		status := ""
		if s := v.d.Status(r.tenant); s != "" {
			status = s
		}
		mark := " "
		if r.tenant == v.noisy {
			mark = "*"
		}
		fmt.Fprintf(&b, "%-15s%s %10.1f %11.1f %11.1f %14s  %s\n", r.tenant, mark, r.rate, r.rej, r.p95, costs[r.tenant].StringFixed(4), status)
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

func containsTenant(list []tenantRow, t string) bool {
	for _, r := range list {
		if r.tenant == t {
			return true
		}
	}
	return false
}
