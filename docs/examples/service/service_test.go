package main

import (
	"bytes"
	"context"
	"encoding/json"
	"go/format"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const root = "../../.."

func goCmd(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestReadmeSnippetCompiles: every Go snippet of the README that starts
// with "package main" is a complete, gofmt-formatted program that builds
// and passes go vet; the instrumentation one shows the three wrappers and
// the limiter group, and every Go snippet is such a program (no fragments
// with undefined names).
func TestReadmeSnippetCompiles(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var programs [][]byte
	for _, m := range regexp.MustCompile("(?s)```go\n(.*?)```").FindAllSubmatch(readme, -1) {
		if !bytes.HasPrefix(m[1], []byte("package main\n")) {
			t.Errorf("a README Go snippet is not a complete program:\n%.200s", m[1])
			continue
		}
		programs = append(programs, m[1])
	}
	instrumented := false
	for _, p := range programs {
		if !bytes.Contains(p, []byte("meter.New(")) {
			continue
		}
		instrumented = true
		for _, want := range []string{"m.Handler(", "m.Transport(", "pgmeter.New(", "lcfg.Group ="} {
			if !bytes.Contains(p, []byte(want)) {
				t.Errorf("the instrumentation snippet does not show %s", want)
			}
		}
	}
	if !instrumented {
		t.Fatal("README has no Go snippet using meter.New")
	}
	for i, p := range programs {
		if formatted, err := format.Source(p); err != nil || !bytes.Equal(formatted, p) {
			t.Errorf("snippet %d is not gofmt-formatted (%v)", i+1, err)
		}
		dir := t.TempDir()
		src := filepath.Join(dir, "main.go")
		if err := os.WriteFile(src, p, 0o644); err != nil {
			t.Fatal(err)
		}
		abs, _ := filepath.Abs(filepath.Join(root, "docs", "examples", "readme", "main.go"))
		overlay, _ := json.Marshal(map[string]map[string]string{"Replace": {abs: src}})
		ov := filepath.Join(dir, "overlay.json")
		if err := os.WriteFile(ov, overlay, 0o644); err != nil {
			t.Fatal(err)
		}
		goCmd(t, root, "build", "-overlay", ov, "-o", os.DevNull, "./docs/examples/readme")
		goCmd(t, root, "vet", "-overlay", ov, "./docs/examples/readme")
	}
}

// TestExampleAgainstDev builds and vets the example, starts `tenantguard
// dev` and the example against it (with a Postgres role that owns nothing
// but its table, so RLS applies), and checks that its requests, payment
// calls and queries land in dev's ClickHouse per tenant, that RLS keeps
// tenants apart, that its SDK metrics are served, and that a throttle
// from the CLI reaches it.
func TestExampleAgainstDev(t *testing.T) {
	if testenv.ClickHouseBinary() == "" && !testenv.InCI() {
		t.Skip("clickhouse-server not found")
	}
	goCmd(t, ".", "vet", ".")
	svcBin := filepath.Join(t.TempDir(), "service")
	goCmd(t, ".", "build", "-o", svcBin, ".")
	tg := testenv.Binary(t)

	dev := testenv.StartProc(t, "dev", exec.Command(tg, "dev", "--data-dir", t.TempDir()),
		"TENANTGUARD_METRICS_LISTEN=127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)),
		"TENANTGUARD_API_LISTEN=127.0.0.1:"+strconv.Itoa(testenv.FreePort(t)))
	var natsURL, chAddr, keyFile, trusted string
	lineRE := regexp.MustCompile(`dev: NATS +(\S+)\s+dev: ClickHouse +(\S+)`)
	keyRE := regexp.MustCompile(`dev: decisions +signed with (\S+); limiters trust (\S+)`)
	deadline := time.Now().Add(60 * time.Second)
	for natsURL == "" {
		m, k := lineRE.FindStringSubmatch(dev.Tail()), keyRE.FindStringSubmatch(dev.Tail())
		if m != nil && k != nil {
			natsURL, chAddr, keyFile, trusted = m[1], m[2], k[1], k[2]
			break
		}
		if dev.Exited() || time.Now().After(deadline) {
			t.Fatalf("tenantguard dev did not start:\n%s", dev.Tail())
		}
		time.Sleep(100 * time.Millisecond)
	}

	pg, adminDSN := testenv.Postgres(t)
	_ = pg
	role := "invoices_" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	admin, err := pgx.Connect(context.Background(), adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	for _, s := range []string{"CREATE ROLE " + role + " LOGIN NOSUPERUSER NOBYPASSRLS", "GRANT CREATE, USAGE ON SCHEMA public TO " + role} {
		if _, err := admin.Exec(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = admin.Exec(ctx, "DROP OWNED BY "+role)
		_, _ = admin.Exec(ctx, "DROP ROLE IF EXISTS "+role)
	})
	appDSN := strings.Replace(adminDSN, "postgres://postgres@", "postgres://"+role+"@", 1)

	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	svc := testenv.StartProc(t, "service", exec.Command(svcBin, "-listen", addr, "-nats", natsURL, "-trusted-key", trusted, "-pg", appDSN))
	base := "http://" + addr
	svc.WaitHTTP200(t, base+"/healthz", 30*time.Second)

	call := func(method, path, tenant, body string) (int, string, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("X-Tenant-ID", tenant)
		req.Header.Set("X-User-ID", "u_"+tenant)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	for _, c := range []struct{ tenant, amount string }{{"acme", "12.50"}, {"acme", "7.00"}, {"globex", "3.00"}} {
		if code, body, _ := call("POST", "/v1/invoices", c.tenant, `{"amount":"`+c.amount+`"}`); code != 201 {
			t.Fatalf("create for %s: %d %s", c.tenant, code, body)
		}
	}
	code, body, _ := call("GET", "/v1/invoices", "acme", "")
	var list []invoice
	if err := json.Unmarshal([]byte(body), &list); code != 200 || err != nil || len(list) != 2 {
		t.Fatalf("acme lists %d %s, want its 2 invoices only (RLS)", code, body)
	}

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{"tenantguard_emitter_buffered", "tenantguard_emitter_dropped_total",
		"tenantguard_limiter_breakers", "tenantguard_limiter_throttled_total", "tenantguard_meter_queued", "tenantguard_meter_dropped_total"} {
		if !bytes.Contains(metrics, []byte(name)) {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	// Usage in dev's ClickHouse, per tenant and kind.
	ch, err := clickhouse.Open(&clickhouse.Options{Addr: []string{chAddr}, Auth: clickhouse.Auth{Database: "tenantguard", Username: "default"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	want := map[string]uint64{"acme/api_request": 3, "acme/webhook_call": 2, "acme/db_query": 3, "globex/api_request": 1, "globex/db_query": 1}
	got := map[string]uint64{}
	deadline = time.Now().Add(60 * time.Second)
	for {
		got = map[string]uint64{}
		rows, err := ch.Query(context.Background(), "SELECT tenant_id, kind, count() FROM events WHERE service = 'invoices-api' GROUP BY tenant_id, kind")
		if err == nil {
			for rows.Next() {
				var tn, kind string
				var n uint64
				if err := rows.Scan(&tn, &kind, &n); err != nil {
					t.Fatal(err)
				}
				got[tn+"/"+kind] = n
			}
			rows.Close()
		}
		done := true
		for k, n := range want {
			if got[k] < n {
				done = false
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored usage %v after 60s, want at least %v", got, want)
		}
		time.Sleep(250 * time.Millisecond)
	}

	// A throttle from the CLI reaches the example: acme's excess gets 429.
	cmd := exec.Command(tg, "throttle", "--tenant", "acme", "--rate", "0.01", "--burst", "1", "--for", "1m",
		"--no-audit", "--reason", "example test")
	cmd.Dir, cmd.Env = t.TempDir(), append(os.Environ(), "TENANTGUARD_NATS_URL="+natsURL,
		"TENANTGUARD_DECISIONS_SIGNING_KEY_FILE="+keyFile) // signed with dev's key, which the example trusts
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tenantguard throttle: %v\n%s", err, out)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		code, _, h := call("GET", "/v1/invoices", "acme", "")
		if code == 429 {
			if h.Get("Retry-After") == "" || h.Get("RateLimit-Limit") != "1" {
				t.Fatalf("429 headers %v, want Retry-After and RateLimit-Limit 1", h)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("acme still gets %d 10s after the throttle", code)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, _, _ := call("GET", "/v1/invoices", "globex", ""); code != 200 {
		t.Fatalf("globex: %d, want 200", code)
	}
}
