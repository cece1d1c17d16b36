package main

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/internal/daemon"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

// daemonProc is `tenantguard run` as a child process.
type daemonProc struct {
	*testenv.Proc
	api   string // http://host:port of the API listener
	began time.Time
}

// startDaemon runs `tenantguard run` with the TENANTGUARD_* settings in vars
// (listen addresses and a decisions signing key are added); it stops at the
// end of t.
func startDaemon(t *testing.T, vars map[string]string) *daemonProc {
	t.Helper()
	bin := testenv.Binary(t)
	apiAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	keyFile := filepath.Join(t.TempDir(), "decisions.key")
	if _, err := daemon.WriteSigningKey(keyFile); err != nil {
		t.Fatal(err)
	}
	env := []string{"TENANTGUARD_API_LISTEN=" + apiAddr,
		fmt.Sprintf("TENANTGUARD_METRICS_LISTEN=127.0.0.1:%d", testenv.FreePort(t)),
		"TENANTGUARD_DECISIONS_SIGNING_KEY_FILE=" + keyFile}
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	d := &daemonProc{api: "http://" + apiAddr, began: time.Now()}
	d.Proc = testenv.StartProc(t, "daemon", exec.Command(bin, "run"), env...)
	return d
}

// get returns the status and body of GET path, or 0 when nothing answers.
func (d *daemonProc) get(path string) (int, string) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(d.api + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls path until it answers status with a body containing want,
// and returns how long after the daemon started that was.
func (d *daemonProc) waitFor(t *testing.T, path string, status int, want string, timeout time.Duration) time.Duration {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code, body := d.get(path)
		if code == status && strings.Contains(body, want) {
			return time.Since(d.began)
		}
		if d.Exited() {
			t.Fatalf("the daemon exited while waiting for %s to answer %d %q; last answer %d %q", path, status, want, code, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer %d %q within %s; last answer %d %q", path, status, want, timeout, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRunWaitsForNATSAndReportsIt: with NATS down at start the daemon
// serves /healthz at once, reports NATS in /readyz and waits; it gets ready
// once NATS is up, and /readyz names NATS again while it is down mid-run.
func TestRunWaitsForNATSAndReportsIt(t *testing.T) {
	ns := testenv.NATS(t)
	ns.Shutdown()
	ch := testenv.NewClickHouseServer(t)
	// The server does not check credentials; the daemon must not print them.
	withCreds := strings.Replace(ns.URL, "nats://", "nats://tg:secret-nats@", 1)
	d := startDaemon(t, map[string]string{
		"TENANTGUARD_NATS_URL":            withCreds,
		"TENANTGUARD_CLICKHOUSE_ADDR":     ch.Addr,
		"TENANTGUARD_CLICKHOUSE_DATABASE": ch.NewDatabase(t),
		"TENANTGUARD_LOG_LEVEL":           "debug",
	})
	took := d.waitFor(t, "/healthz", http.StatusOK, "", 2*time.Second)
	t.Logf("/healthz answered %s after start", took.Round(time.Millisecond))
	d.waitFor(t, "/readyz", http.StatusServiceUnavailable, "nats", 5*time.Second)
	time.Sleep(6 * time.Second) // the daemon used to give up after 5s
	if code, body := d.get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "nats") {
		t.Fatalf("/readyz with NATS down got %d %q, want 503 naming nats", code, body)
	}

	if err := ns.Start(); err != nil {
		t.Fatal(err)
	}
	took = d.waitFor(t, "/readyz", http.StatusOK, "", time.Minute)
	t.Logf("/readyz answered 200 %s after start", took.Round(time.Millisecond))

	ns.Shutdown()
	d.waitFor(t, "/readyz", http.StatusServiceUnavailable, "nats", 10*time.Second)
	if err := ns.Start(); err != nil {
		t.Fatal(err)
	}
	d.waitFor(t, "/readyz", http.StatusOK, "", time.Minute)
	if code := d.Stop(); code != 0 {
		t.Errorf("the daemon exited with status %d after SIGTERM, want 0", code)
	}
	if lines := d.Grep("secret"); len(lines) > 0 {
		t.Errorf("the daemon printed the NATS password:\n%s", strings.Join(lines, "\n"))
	}
}

// TestRunServesHealthWhileClickHouseDown: with ClickHouse down at start,
// /healthz answers at once and /readyz names ClickHouse until it is up.
func TestRunServesHealthWhileClickHouseDown(t *testing.T) {
	ns := testenv.NATS(t)
	ch := testenv.NewClickHouseServer(t)
	ch.Stop()
	d := startDaemon(t, map[string]string{
		"TENANTGUARD_NATS_URL":        ns.URL,
		"TENANTGUARD_CLICKHOUSE_ADDR": ch.Addr,
	})
	took := d.waitFor(t, "/healthz", http.StatusOK, "", 2*time.Second)
	t.Logf("/healthz answered %s after start", took.Round(time.Millisecond))
	d.waitFor(t, "/readyz", http.StatusServiceUnavailable, "clickhouse", 5*time.Second)
	if err := ch.Start(); err != nil {
		t.Fatal(err)
	}
	d.waitFor(t, "/readyz", http.StatusOK, "", time.Minute)
	if code := d.Stop(); code != 0 {
		t.Errorf("the daemon exited with status %d after SIGTERM, want 0", code)
	}
}
