package testenv

import (
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/internal/childproc"
)

// Proc is a child process of a test, such as `tenantguard run`, with its
// output in a log file (see childproc). It is stopped (SIGTERM, then
// SIGKILL after 15 s) when the test ends, and its log tail is printed if
// the test failed.
type Proc struct {
	*childproc.Proc
}

// StartProc starts cmd with this process's environment minus every
// TENANTGUARD_* variable, plus env, in an empty working directory (so no
// tenantguard.yaml is picked up by accident).
func StartProc(t testing.TB, name string, cmd *exec.Cmd, env ...string) *Proc {
	t.Helper()
	if cmd.Dir == "" {
		cmd.Dir = t.TempDir()
	}
	cp, err := childproc.Start(name, cmd, filepath.Join(t.TempDir(), name+".log"), env...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cp.Stop()
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", name, cp.Tail())
		}
	})
	return &Proc{cp}
}

// WaitHTTP200 waits until url answers 200, failing the test when the
// process exits first or timeout passes.
func (p *Proc) WaitHTTP200(t testing.TB, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := answers200(url)
		if ok {
			return
		}
		if p.Exited() {
			t.Fatalf("%s exited before %s answered 200:\n%s", p.Name, url, p.Tail())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s did not answer 200 within %s (last error %v):\n%s", p.Name, url, timeout, err, p.Tail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
