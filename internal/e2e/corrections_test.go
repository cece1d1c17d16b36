package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// TestCorrectionsThroughTheDaemon runs `tenantguard run`, meters ten
// requests of acme through an emitter, and corrects two of them through the
// emitter's Correct: the daemon applies them, its cost API nets them out,
// its /metrics counts them, and `tenantguard correct` through the daemon
// refuses a second void.
func TestCorrectionsThroughTheDaemon(t *testing.T) {
	ns := testenv.NATS(t)
	ch, db := testenv.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st := teststore.On(t, ch, db)
	apiAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	metricsAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	cfg := writeConfig(t, ns.URL, ch.Addr, db, apiAddr, metricsAddr)
	bin := testenv.Binary(t)
	daemon := testenv.StartProc(t, "daemon", exec.Command(bin, "run", "--config", cfg))
	daemon.WaitHTTP200(t, "http://"+apiAddr+"/readyz", 2*time.Minute)

	nc := testenv.Connect(t, ns.URL)
	em, err := emit.New(nc, emit.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer em.Close(context.Background())
	now := time.Now().UTC()
	for i := range 10 {
		if err := em.Emit(ctx, event.Event{ID: fmt.Sprintf("r%d", i), TenantID: "acme", Kind: event.KindAPIRequest, Time: now, Quantity: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if got := waitStored(t, ctx, st, "acme", 10); len(got) != 10 {
		t.Fatalf("stored %d of 10 events", len(got))
	}
	five := 5.0
	res, err := em.Correct(ctx,
		event.Correction{TenantID: "acme", EventID: "r0", Action: event.ActionVoid, Reason: "test traffic", By: "e2e"},
		event.Correction{TenantID: "acme", EventID: "r1", Action: event.ActionAmend, Quantity: &five, Reason: "batched call", By: "e2e"})
	if err != nil || res[0].Status != event.CorrectionApplied || res[1].Status != event.CorrectionApplied {
		t.Fatalf("correct: %+v %v", res, err)
	}

	// 10 requests at 0.0001, one voided, one counted 5 times: 13 x 0.0001.
	rng := "from=" + now.Add(-time.Hour).Format(time.RFC3339) + "&to=" + now.Add(time.Hour).Format(time.RFC3339)
	code, body := httpGet(t, "http://"+apiAddr+"/api/v1/tenants/acme/cost?"+rng, "Bearer "+adminToken)
	var cost struct {
		Total string `json:"total"`
	}
	if err := json.Unmarshal(body, &cost); code != 200 || err != nil || cost.Total != "0.001300000" {
		t.Fatalf("cost API: %d %s", code, body)
	}
	_, metrics := httpGet(t, "http://"+metricsAddr+"/metrics", "")
	for _, want := range []string{
		`tenantguard_tenant_corrections_total{kind="api_request",tenant="acme"} 2`,
		`tenantguard_tenant_corrected_cost_total{direction="credit",tenant="acme"} 0.0001`,
		`tenantguard_tenant_corrected_cost_total{direction="debit",tenant="acme"} 0.0004`,
		`tenantguard_tenant_events_total{kind="api_request",tenant="acme"} 10`,
		`tenantguard_corrections_total{status="applied"} 2`,
	} {
		if !strings.Contains(string(metrics), want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	out, err := exec.CommandContext(ctx, bin, "correct", "--config", cfg, "--tenant", "acme", "--void", "--reason", "again", "--by", "e2e", "r0").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "already_voided") {
		t.Fatalf("second void through the CLI: %v\n%s", err, out)
	}
	if lines := daemon.Grep("panic", "level=ERROR"); len(lines) > 0 {
		t.Errorf("daemon logged:\n%s", strings.Join(lines, "\n"))
	}
}
