package dashboards

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// expandClickHouse expands the grafana-clickhouse-datasource macros the way
// the plugin does for a native-protocol datasource, then the variables.
func expandClickHouse(t *testing.T, sql string, from, to time.Time, intervalS int, vars map[string]string) string {
	t.Helper()
	f, u := strconv.FormatInt(from.Unix(), 10), strconv.FormatInt(to.Unix(), 10)
	for {
		i := strings.Index(sql, "$__timeFilter(")
		if i < 0 {
			break
		}
		j := strings.Index(sql[i:], ")")
		col := strings.TrimSpace(sql[i+len("$__timeFilter(") : i+j])
		sql = sql[:i] + fmt.Sprintf("%s >= toDateTime(%s) AND %s <= toDateTime(%s)", col, f, col, u) + sql[i+j+1:]
	}
	sql = strings.NewReplacer(
		"$__fromTime", "toDateTime("+f+")",
		"$__toTime", "toDateTime("+u+")",
		"$__interval_s", strconv.Itoa(intervalS),
	).Replace(sql)
	return expandVars(t, sql, vars)
}

// TestClickHousePanels migrates a fresh database with collector/store,
// loads events, anomalies and decisions, then runs every ClickHouse panel
// and annotation query of every dashboard after expanding the macros.
func TestClickHousePanels(t *testing.T) {
	var qs []query
	for _, d := range loadDashboards(t) {
		for _, q := range d.queries(t) {
			if q.ds == chUID {
				qs = append(qs, q)
			}
		}
	}
	if len(qs) < 10 {
		t.Fatalf("only %d ClickHouse queries found", len(qs))
	}
	ctx := context.Background()
	srv, db := testenv.ClickHouse(t)
	st := teststore.On(t, srv, db)

	now := time.Now().UTC().Truncate(time.Second)
	// Keep the data inside this month so month-to-date panels have rows.
	start := now.Add(-30 * time.Minute)
	if som := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC); start.Before(som) {
		start = som
	}
	var rows []store.Row
	tenants := []string{drillTenant, "globex", "initech"}
	kinds := []string{event.KindAPIRequest, event.KindAITokens}
	span := now.Sub(start)
	for i := 0; i < 300; i++ {
		at := start.Add(time.Duration(i) * span / 300)
		tn, k := tenants[i%len(tenants)], kinds[i%len(kinds)]
		price := decimal.RequireFromString("0.0001")
		qty := float64(1 + i%7)
		rows = append(rows, store.Row{
			Event: &event.Event{ID: fmt.Sprintf("ev-%d", i), TenantID: tn, Kind: k, Time: at, Quantity: qty,
				LatencyMs: float64(3 + i%200), StatusCode: 200, Error: i%13 == 0},
			Plan: "pro", UnitPrice: price, Cost: price.Mul(decimal.NewFromFloat(qty)), PriceVersion: "v1",
		})
	}
	if err := st.InsertEvents(ctx, rows, now); err != nil {
		t.Fatalf("insert events: %v", err)
	}
	conn := st.Conn()
	ab, err := conn.PrepareBatch(ctx, "INSERT INTO "+st.Table("anomalies")+
		" (fingerprint, tenant_id, metric, kind, status, severity, observed, baseline, ratio, starts_at, ends_at, summary, updated_at)")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct {
		status string
		ends   time.Time
	}{{"firing", time.Unix(0, 0)}, {"resolved", now.Add(-5 * time.Minute)}} {
		if err := ab.Append("fp-"+a.status, drillTenant, "events_rate", "api_request", a.status, "warning",
			120.0, 10.0, 12.0, now.Add(-20*time.Minute), a.ends, "events 12x baseline", now); err != nil {
			ab.Abort()
			t.Fatal(err)
		}
	}
	if err := ab.Send(); err != nil {
		t.Fatalf("insert anomalies: %v", err)
	}
	dbatch, err := conn.PrepareBatch(ctx, "INSERT INTO "+st.Table("decisions")+
		" (tenant_id, scope, action, rate_per_sec, burst, issued_at, expires_at, reason, source, anomaly_id, recorded_at)")
	if err != nil {
		t.Fatal(err)
	}
	if err := dbatch.Append(drillTenant, "all", "throttle", 50.0, uint32(100), now.Add(-10*time.Minute),
		now.Add(20*time.Minute), "noisy", "anomaly", "fp-firing", now); err != nil {
		dbatch.Abort()
		t.Fatal(err)
	}
	if err := dbatch.Send(); err != nil {
		t.Fatalf("insert decisions: %v", err)
	}

	vars := map[string]string{"database": db, "tenant": drillTenant, "topk": "10"}
	from, to := now.Add(-time.Hour), now.Add(time.Minute)
	for _, q := range qs {
		sql := expandClickHouse(t, q.text, from, to, 60, vars)
		if strings.Contains(sql, "$") {
			t.Errorf("%s: unexpanded macro in %s", q.where, sql)
			continue
		}
		n, err := runCH(ctx, st, sql)
		if err != nil {
			t.Errorf("%s: %v\n    %s", q.where, err, sql)
			continue
		}
		if n == 0 {
			t.Errorf("%s: no rows from loaded data\n    %s", q.where, sql)
		}
	}
	t.Logf("%d ClickHouse queries ran on %s", len(qs), srv.Addr)
}

// runCH runs sql to completion and counts rows.
func runCH(ctx context.Context, st *store.Store, sql string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rows, err := st.Conn().Query(ctx, sql)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
	}
	return n, rows.Err()
}
