package childproc

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStartCleanEnvironmentLogAndStop(t *testing.T) {
	t.Setenv("TENANTGUARD_INHERITED", "leak")
	cmd := exec.Command("sh", "-c", `echo "inherited=$TENANTGUARD_INHERITED given=$TENANTGUARD_GIVEN"; echo ready; exec sleep 60`)
	cmd.Dir = t.TempDir()
	p, err := Start("sleeper", cmd, filepath.Join(t.TempDir(), "sleeper.log"), "TENANTGUARD_GIVEN=yes")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for len(p.Grep("ready")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no output within 10s: %q", p.Tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got, want := p.Grep("inherited="), "inherited= given=yes"; len(got) != 1 || got[0] != want {
		t.Errorf("got %q, want [%q]: TENANTGUARD_* is not inherited, env is added", got, want)
	}
	if p.Exited() {
		t.Fatal("exited before Stop")
	}
	if code := p.Stop(); code != -1 {
		t.Errorf("Stop: got exit code %d, want -1 (ended by SIGTERM)", code)
	}
	if !p.Exited() || p.Stop() != -1 {
		t.Error("after Stop: want Exited, and a second Stop giving the same code")
	}
	if !strings.Contains(p.Tail(), "ready") {
		t.Errorf("Tail: got %q, want the output", p.Tail())
	}
}
