package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/internal/devstack"

	"github.com/ClickHouse/clickhouse-go/v2"
	"golang.org/x/sys/unix"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

// openPTY returns the master and the slave of a new pseudo-terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return m, s
}

// terminal is what a process printed on a pseudo-terminal.
type terminal struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (tm *terminal) Write(p []byte) (int, error) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.buf.Write(p)
}

func (tm *terminal) String() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.buf.String()
}

// devRun is one `make demo` (tenantguard dev --demo) on a terminal.
type devRun struct {
	cmd    *exec.Cmd
	master *os.File
	out    *terminal
	done   chan struct{} // closed when make has exited; err is then set
	err    error
}

// startMakeDemo runs `make demo` in dir on a new pseudo-terminal, as a
// newcomer would from a shell, with the Makefile's recipe pointed at bin
// and a light demo.
func startMakeDemo(t *testing.T, bin, dir string) *devRun {
	t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	mk := "demo:\n\t" + bin + " dev --demo --tenants 6 --rate 40 --spike-after 1h\n"
	if err := os.WriteFile(filepath.Join(dir, "Makefile"), []byte(mk), 0o644); err != nil {
		t.Fatal(err)
	}
	master, slave := openPTY(t)
	cmd := exec.Command("make", "-s", "demo")
	cmd.Dir, cmd.Env = dir, cleanEnv()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	r := &devRun{cmd: cmd, master: master, out: &terminal{}, done: make(chan struct{})}
	go func() { _, _ = io.Copy(r.out, master) }()
	go func() { r.err = cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-r.done
		}
		master.Close()
	})
	return r
}

// waitFor waits until the terminal shows re and returns its first match.
func (r *devRun) waitFor(t *testing.T, re *regexp.Regexp, within time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if m := re.FindStringSubmatch(r.out.String()); m != nil {
			return m
		}
		select {
		case <-r.done:
			t.Fatalf("make demo ended (%v) before %s showed:\n%s", r.err, re, r.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s\n%s", within, re, r.out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ctrlC presses Ctrl-C on the terminal and returns make's exit status.
func (r *devRun) ctrlC(t *testing.T) int {
	t.Helper()
	if _, err := r.master.Write([]byte{0x03}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.done:
		var ee *exec.ExitError
		if errors.As(r.err, &ee) {
			return ee.ExitCode()
		}
		if r.err != nil {
			t.Fatal(r.err)
		}
		return 0
	case <-time.After(30 * time.Second):
		t.Fatalf("make demo still runs 30 s after Ctrl-C:\n%s", r.out)
	}
	return -1
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) {
			env = append(env, kv)
		}
	}
	return env
}

// TestDevStackFirstHour goes through a newcomer's first hour: `make demo`
// on a terminal prints the addresses and a dev API token, once and in the
// live table's header, which says how many tenants it shows and the
// currency; the CLI run from the same folder finds the stack with no flags
// (and the audit row of a throttle carries its burst); the API answers the
// token; Ctrl-C ends make with status 0; and a second run gets the same
// ports and token.
func TestDevStackFirstHour(t *testing.T) {
	if testenv.ClickHouseBinary() == "" {
		t.Skip("clickhouse-server is not installed")
	}
	bin := testenv.Binary(t)
	dir := t.TempDir()
	run := startMakeDemo(t, bin, dir)
	banner := regexp.MustCompile(`dev: NATS +(nats://\S+)[\s\S]*dev: ClickHouse +(\S+) \(clickhouse-client --port \d+\)[\s\S]*dev: API +(http://\S+) +admin token (tgdev_[0-9a-f]+)`)
	m := run.waitFor(t, banner, 60*time.Second)
	natsURL, chAddr, apiURL, token := m[1], m[2], m[3], m[4]
	table := run.waitFor(t, regexp.MustCompile(`showing (\d+) of 6 tenants \((\d+) active in the last 30s\)`), 60*time.Second)
	view := run.out.String()
	for _, want := range []string{"COST USD", "NATS " + natsURL, "API " + apiURL + "   token " + token, "noisy-co"} {
		if !strings.Contains(view, want) {
			t.Errorf("the live table does not show %q:\n%s", want, view)
		}
	}
	t.Logf("live table: showing %s of 6 tenants (%s active)", table[1], table[2])

	// The dev config holds the token's hash, never the token.
	cfgBody, err := os.ReadFile(filepath.Join(dir, devstack.ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(token))
	if !strings.HasPrefix(string(cfgBody), devstack.ConfigMarker) || !strings.Contains(string(cfgBody), hex.EncodeToString(sum[:])) ||
		strings.Contains(string(cfgBody), token) {
		t.Errorf("%s: want the marker and the token's SHA-256, not the token:\n%s", devstack.ConfigFile, cfgBody)
	}
	if fi, err := os.Stat(filepath.Join(dir, ".tenantguard", devstack.TokenFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("token file: %v, %v; want mode 0600", err, fi)
	}

	// The CLI from the same folder, no flags.
	cli := func(args ...string) (string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c := exec.CommandContext(ctx, bin, args...)
		c.Dir, c.Env = dir, cleanEnv()
		out, err := c.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	if out, code := cli("throttle", "--tenant", "tenant-02", "--rate", "2.5", "--for", "10m"); code != 0 || !strings.Contains(out, "burst 3") {
		t.Fatalf("throttle from the dev folder: exit %d\n%s", code, out)
	}
	if out, code := cli("decisions"); code != 0 || !strings.Contains(out, "tenant-02") || !strings.Contains(out, "ok") {
		t.Fatalf("decisions from the dev folder: exit %d\n%s", code, out)
	}
	if out, code := cli("--version"); code != 0 || !strings.Contains(out, "clickhouse  18.16") || !strings.Contains(out, devstack.ConfigFile) {
		t.Errorf("--version from the dev folder: exit %d\n%s", code, out)
	}
	from, to := time.Now().UTC().Add(-time.Hour).Format(time.RFC3339), time.Now().UTC().Add(time.Minute).Format(time.RFC3339)
	if out, code := cli("export", "billing", "--from", from, "--to", to, "--format", "csv"); code != 0 || !strings.Contains(out, "tenant_id,line_type") {
		t.Errorf("export billing from the dev folder: exit %d\n%s", code, out)
	}
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{chAddr}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	testenv.Eventually(t, 15*time.Second, "the audit row of the CLI throttle, with burst 3", func() bool {
		var burst uint32
		err := conn.QueryRow(context.Background(), "SELECT burst FROM tenantguard.decisions WHERE tenant_id = 'tenant-02' AND kv_op = 'put' ORDER BY kv_revision DESC LIMIT 1").Scan(&burst)
		return err == nil && burst == 3
	})
	run.waitFor(t, regexp.MustCompile(`tenant-02 [^\n]*THROTTLED 2\.5/s`), 15*time.Second)

	// The API with the printed token, and without.
	get := func(auth string) int {
		req, _ := http.NewRequest(http.MethodGet, apiURL+"/api/v1/tenants/tenant-01/usage?from="+from+"&to="+to, nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get(token); got != http.StatusOK {
		t.Errorf("API with the dev token: got %d, want 200", got)
	}
	if got := get(""); got != http.StatusUnauthorized {
		t.Errorf("API without a token: got %d, want 401", got)
	}

	if code := run.ctrlC(t); code != 0 {
		t.Fatalf("make demo after Ctrl-C: got exit status %d, want 0\n%s", code, run.out)
	}

	// Again: the same addresses and token.
	again := startMakeDemo(t, bin, dir)
	m2 := again.waitFor(t, banner, 60*time.Second)
	if m2[1] != natsURL || m2[2] != chAddr || m2[3] != apiURL || m2[4] != token {
		t.Errorf("second run: got %v, want the first run's %v", m2[1:], m[1:])
	}
	if code := again.ctrlC(t); code != 0 {
		t.Fatalf("second make demo after Ctrl-C: got exit status %d, want 0", code)
	}
}
