package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

// daemonProc is `tenantguard run` as a child process.
type daemonProc struct {
	cmd   *exec.Cmd
	api   string // http://host:port of the API listener
	began time.Time
	mu    sync.Mutex
	out   bytes.Buffer // stdout and stderr
	done  chan struct{}
}

func (d *daemonProc) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.Write(p)
}

func (d *daemonProc) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.String()
}

func (d *daemonProc) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// startDaemon runs `tenantguard run` with the TENANTGUARD_* settings in vars
// (listen addresses are added) and stops it at the end of t.
func startDaemon(t *testing.T, vars map[string]string) *daemonProc {
	t.Helper()
	bin := testenv.Binary(t)
	apiAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	d := &daemonProc{api: "http://" + apiAddr, done: make(chan struct{})}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) {
			env = append(env, kv)
		}
	}
	env = append(env, "TENANTGUARD_API_LISTEN="+apiAddr,
		fmt.Sprintf("TENANTGUARD_METRICS_LISTEN=127.0.0.1:%d", testenv.FreePort(t)))
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	d.cmd = exec.Command(bin, "run")
	d.cmd.Dir, d.cmd.Env = t.TempDir(), env
	d.cmd.Stdout, d.cmd.Stderr = d, d
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.began = time.Now()
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		if !d.exited() {
			_ = d.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.done:
			case <-time.After(20 * time.Second):
				_ = d.cmd.Process.Kill()
				<-d.done
			}
		}
		if t.Failed() {
			t.Logf("daemon output:\n%s", d.log())
		}
	})
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
		if d.exited() {
			t.Fatalf("the daemon exited (%v) while waiting for %s to answer %d %q; last answer %d %q", d.cmd.ProcessState, path, status, want, code, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer %d %q within %s; last answer %d %q", path, status, want, timeout, code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the daemon with SIGTERM and wants exit status 0.
func (d *daemonProc) stop(t *testing.T) {
	t.Helper()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the daemon did not stop within 20s of SIGTERM")
	}
	if !d.cmd.ProcessState.Success() {
		t.Errorf("the daemon exited with %v, want 0", d.cmd.ProcessState)
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
	d.stop(t)
	if strings.Contains(d.log(), "secret") {
		t.Errorf("the daemon printed the NATS password:\n%s", d.log())
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
	d.stop(t)
}
