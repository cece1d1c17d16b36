package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/exporter/api"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// TestAdvisorRaisesHeavyTenant: with a week in ClickHouse where one tenant
// holds 3 of 7 events every hour, the daemon's advisor run stores a firing
// heavy_tenant alert for it (and for no one else) through the alert sinks,
// and the API answers the advice to an admin.
func TestAdvisorRaisesHeavyTenant(t *testing.T) {
	ch, db := testenv.ClickHouse(t)
	st := teststore.On(t, ch, db)
	end := time.Now().UTC().Truncate(time.Hour)
	var rows []store.Row
	add := func(tenant string, at time.Time) {
		rows = append(rows, store.Row{Event: &event.Event{ID: fmt.Sprintf("%s-%d", tenant, len(rows)), TenantID: tenant,
			Kind: event.KindAPIRequest, Time: at, Quantity: 1}, Plan: "default", UnitPrice: decimal.Zero, Cost: decimal.Zero})
	}
	for h := end.Add(-168 * time.Hour); h.Before(end); h = h.Add(time.Hour) {
		for i := 0; i < 3; i++ {
			add("whale", h.Add(time.Duration(i)*time.Minute))
		}
		for i, tenant := range []string{"m1", "m2", "m3", "m4"} {
			add(tenant, h.Add(time.Duration(10+i)*time.Minute))
		}
	}
	if err := st.InsertEvents(context.Background(), rows, time.Now()); err != nil {
		t.Fatal(err)
	}

	ns := testenv.NATS(t)
	apiAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cfg := DefaultConfig()
	cfg.NATS.URL = ns.URL
	cfg.ClickHouse.Addr, cfg.ClickHouse.Database = []string{ch.Addr}, db
	cfg.API.Listen, cfg.Metrics.Listen = apiAddr, fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	sum := sha256.Sum256([]byte("tok-admin"))
	cfg.API.Tokens = []api.Token{{Name: "ops", SHA256: hex.EncodeToString(sum[:]), Role: "admin"}}
	cfg.Collector.Enabled, cfg.Anomaly.Enabled, cfg.Decisions.Enabled = false, false, false
	d, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	var firing []store.AnomalyRow
	testenv.Eventually(t, 60*time.Second, "a firing heavy_tenant alert in the anomalies table", func() bool {
		firing, err = st.FiringAnomalies(ctx, anomaly.MetricHeavyTenant)
		return err == nil && len(firing) > 0
	})
	if len(firing) != 1 || firing[0].TenantID != "whale" || firing[0].Severity != string(anomaly.SeverityWarning) {
		t.Fatalf("got %+v, want one warning for whale", firing)
	}
	status, _, body := testenv.HTTPGet(t, "http://"+apiAddr+"/api/v1/advice", "Bearer tok-admin")
	if status != 200 || !strings.Contains(string(body), `"tenant_id":"whale","recommendation":"move_to_dedicated"`) {
		t.Fatalf("GET /api/v1/advice: %d %s", status, body)
	}
}
