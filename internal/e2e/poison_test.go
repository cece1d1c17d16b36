package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/internal/daemon"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

const adminToken = "poison-admin-token"

// boundary is one event at a numeric edge, published as raw JSON so that
// values no Go emitter would send reach the daemon too.
type boundary struct {
	id, kind, fields string
	stored           bool // false: dead-lettered with reason
	reason           event.Reason
}

func boundaries() []boundary {
	return []boundary{
		{"q-zero", "api_request", `"quantity":0`, true, ""},
		{"q-negzero", "api_request", `"quantity":-0`, true, ""},
		{"q-denormal", "ai_tokens", `"quantity":5e-324`, true, ""},
		{"q-tiny", "ai_tokens", `"quantity":1e-300`, true, ""},
		{"q-max-free", "storage_bytes", `"quantity":9007199254740991`, true, ""},
		{"q-max-free-2", "storage_bytes", `"quantity":9007199254740991`, true, ""},
		{"q-above-max", "storage_bytes", `"quantity":9007199254740992`, false, event.ReasonBadQuantity},
		{"q-1e308", "webhook_call", `"quantity":1e308`, false, event.ReasonBadQuantity},
		{"q-maxfloat", "webhook_call", `"quantity":1.7976931348623157e308`, false, event.ReasonBadQuantity},
		{"q-1e309", "webhook_call", `"quantity":1e309`, false, event.ReasonBadQuantity},
		{"q-negative", "api_request", `"quantity":-1e-300`, false, event.ReasonBadQuantity},
		{"q-priced-fits", "api_request", `"quantity":9999999999999`, true, ""},                            // cost 999999999.9999 fits Decimal(18, 9)
		{"q-priced-overflow", "api_request", `"quantity":10000000000000`, false, event.ReasonBadQuantity}, // cost 1e9 does not
		{"l-zero", "api_request", `"latency_ms":0`, true, ""},
		{"l-max", "webhook_call", `"latency_ms":1000000000`, true, ""},
		{"l-above-max", "webhook_call", `"latency_ms":1000000000.5`, false, event.ReasonBadField},
		{"l-1e308", "webhook_call", `"latency_ms":1e308`, false, event.ReasonBadField},
		{"l-negative", "webhook_call", `"latency_ms":-1`, false, event.ReasonBadField},
		{"s-999", "api_request", `"status_code":999`, true, ""},
		{"s-1000", "api_request", `"status_code":1000`, false, event.ReasonBadField},
		{"s-huge", "api_request", `"status_code":1e30`, false, event.ReasonBadField},
	}
}

// TestPoisonEventsLeaveTheDaemonHealthy publishes events at every numeric
// boundary of the wire format, beside rows that an older release let into
// ClickHouse (sums of +Inf). Each event is stored or dead-lettered with its
// reason; then the daemon restarts cleanly (warm start included), and every
// API, export and metric answers with finite numbers.
func TestPoisonEventsLeaveTheDaemonHealthy(t *testing.T) {
	ns := testenv.NATS(t)
	ch, db := testenv.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st := teststore.On(t, ch, db)
	seedLegacyPoison(t, ctx, st)

	apiAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	metricsAddr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	cfg := writeConfig(t, ns.URL, ch.Addr, db, apiAddr, metricsAddr)
	bin := testenv.Binary(t)
	start := func(name string) *testenv.Proc {
		p := testenv.StartProc(t, name, exec.Command(bin, "run", "--config", cfg))
		p.WaitHTTP200(t, "http://"+apiAddr+"/readyz", 2*time.Minute)
		return p
	}
	daemon := start("daemon")

	nc := testenv.Connect(t, ns.URL)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cases := boundaries()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for _, c := range cases {
		body := fmt.Sprintf(`{"id":%q,"tenant_id":"edge","kind":%q,"time":%q,%s}`, c.id, c.kind, now, c.fields)
		m := nats.NewMsg(event.Subject("edge", c.kind))
		m.Data = []byte(body)
		m.Header.Set(event.HeaderMsgID, c.id)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatalf("%s: publish: %v", c.id, err)
		}
	}

	var wantStored, wantDLQ int
	for _, c := range cases {
		if c.stored {
			wantStored++
		} else {
			wantDLQ++
		}
	}
	stored := waitStored(t, ctx, st, "edge", wantStored)
	letters := readDLQ(t, ctx, js, wantDLQ)
	for _, c := range cases {
		switch reason, dead := letters[c.id]; {
		case c.stored && !stored[c.id]:
			t.Errorf("%s (%s): not stored (dead letter %q)", c.id, c.fields, reason)
		case !c.stored && !dead:
			t.Errorf("%s (%s): not dead-lettered (stored %v)", c.id, c.fields, stored[c.id])
		case !c.stored && !strings.HasPrefix(reason, string(c.reason)+": "):
			t.Errorf("%s (%s): reason %q, want %s", c.id, c.fields, reason, c.reason)
		}
	}
	checkFinite(t, apiAddr, metricsAddr)

	if code := daemon.Stop(); code != 0 {
		t.Fatalf("daemon stopped with exit code %d, want 0:\n%s", code, daemon.Tail())
	}
	daemon = start("daemon-restarted")
	time.Sleep(2 * time.Second) // warm start has run; the daemon must still be up
	if daemon.Exited() {
		t.Fatalf("daemon died after its restart:\n%s", daemon.Tail())
	}
	if lines := daemon.Grep("panic", "level=ERROR"); len(lines) > 0 {
		t.Errorf("restarted daemon logged:\n%s", strings.Join(lines, "\n"))
	}
	checkFinite(t, apiAddr, metricsAddr)

	// anomaly.warm_start.enabled: false is honoured.
	daemon.Stop()
	cold := testenv.StartProc(t, "daemon-cold", exec.Command(bin, "run", "--config", cfg),
		"TENANTGUARD_ANOMALY_WARM_START_ENABLED=false", "TENANTGUARD_LOG_LEVEL=info")
	cold.WaitHTTP200(t, "http://"+apiAddr+"/readyz", 2*time.Minute)
	if len(cold.Grep("warm start off")) != 1 || len(cold.Grep("warm-started")) != 0 {
		t.Errorf("with anomaly.warm_start.enabled=false the daemon still warm-started:\n%s", cold.Tail())
	}
}

// seedLegacyPoison writes what a release without numeric bounds stored: two
// quantities of 1e308 in one minute (their sum is +Inf) and a latency of
// 1e308 (+Inf in the rollup's Float32), inside warm start's window.
func seedLegacyPoison(t *testing.T, ctx context.Context, st *store.Store) {
	t.Helper()
	at := time.Now().UTC().Add(-20 * time.Minute)
	var rows []store.Row
	for i, f := range []struct{ qty, lat float64 }{{1e308, 5}, {1e308, 5}, {1, 1e308}} {
		e := &event.Event{ID: fmt.Sprintf("legacy-%d", i), TenantID: "legacy", Kind: event.KindAPIRequest,
			Time: at, Quantity: f.qty, LatencyMs: f.lat}
		rows = append(rows, store.Row{Event: e, Plan: "default", UnitPrice: decimal.Zero, Cost: decimal.RequireFromString("0.25"), PriceVersion: "old"})
	}
	if err := st.InsertEvents(ctx, rows, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func writeConfig(t *testing.T, natsURL, chAddr, db, apiAddr, metricsAddr string) string {
	t.Helper()
	sum := sha256.Sum256([]byte(adminToken))
	keyFile := filepath.Join(t.TempDir(), "decisions.key")
	if _, err := daemon.WriteSigningKey(keyFile); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`nats:
  url: %s
clickhouse:
  addr: %s
  database: %s
api:
  listen: %s
  tokens:
    - name: ops
      sha256: %s
      role: admin
metrics:
  listen: %s
log:
  level: warn
pricing:
  prices:
    api_request: "0.0001"
    ai_tokens: "0.000002"
decisions:
  signing_key_file: %s
`, natsURL, chAddr, db, apiAddr, hex.EncodeToString(sum[:]), metricsAddr, keyFile)
	path := filepath.Join(t.TempDir(), "tenantguard.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func waitStored(t *testing.T, ctx context.Context, st *store.Store, tenant string, want int) map[string]bool {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		rows, err := st.Conn().Query(ctx, "SELECT id FROM "+st.Table("events")+" WHERE tenant_id = ?", tenant)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			got[id] = true
		}
		rows.Close()
		if len(got) >= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// readDLQ returns the dead letters' reasons by original id.
func readDLQ(t *testing.T, ctx context.Context, js jetstream.JetStream, want int) map[string]string {
	t.Helper()
	got := map[string]string{}
	deadline := time.Now().Add(60 * time.Second)
	for len(got) < want && time.Now().Before(deadline) {
		s, err := js.Stream(ctx, event.DLQStream)
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatal(err)
		}
		batch, err := cons.Fetch(want, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			got[m.Headers().Get(event.HeaderOriginalMsgID)] = m.Headers().Get(event.HeaderReason)
		}
	}
	return got
}

// checkFinite reads every API answer and export for the test's tenants, and
// /metrics: each must succeed and carry no NaN or infinity.
func checkFinite(t *testing.T, apiAddr, metricsAddr string) {
	t.Helper()
	from := time.Now().UTC().Add(-24 * time.Hour).Truncate(time.Hour).Format(time.RFC3339)
	to := time.Now().UTC().Add(time.Hour).Truncate(time.Hour).Format(time.RFC3339)
	rng := "from=" + from + "&to=" + to
	var paths []string
	for _, tenant := range []string{"edge", "legacy"} {
		for _, w := range []string{"minute", "hour", "day"} {
			paths = append(paths, "/api/v1/tenants/"+tenant+"/usage?window="+w+"&"+rng)
		}
		paths = append(paths, "/api/v1/tenants/"+tenant+"/cost?"+rng,
			"/api/v1/tenants/"+tenant+"/events?format=ndjson&"+rng)
	}
	paths = append(paths, "/api/v1/costs?"+rng, "/api/v1/billing/export?format=json&"+rng,
		"/api/v1/billing/export?format=csv&"+rng, "/api/v1/anomalies?"+rng, "/api/v1/decisions?"+rng)
	for _, p := range paths {
		status, body := httpGet(t, "http://"+apiAddr+p, "Bearer "+adminToken)
		if status != http.StatusOK || len(body) == 0 {
			t.Errorf("GET %s: got %d with %d bytes, want 200 with a body: %.300s", p, status, len(body), body)
			continue
		}
		if bytes.Contains(body, []byte("Inf")) || bytes.Contains(body, []byte("NaN")) {
			t.Errorf("GET %s: answer holds a non-finite number: %.500s", p, body)
		}
		if strings.Contains(p, "format=csv") {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if !json.Valid(sc.Bytes()) {
				t.Errorf("GET %s: not JSON: %.300s", p, sc.Bytes())
				break
			}
		}
	}
	status, body := httpGet(t, "http://"+metricsAddr+"/metrics", "")
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d", status)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "tenantguard_") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			t.Errorf("/metrics: %s", line)
		}
	}
}

func httpGet(t *testing.T, url, auth string) (int, []byte) {
	t.Helper()
	status, _, body := testenv.HTTPGet(t, url, auth)
	return status, body
}
