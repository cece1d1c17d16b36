package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// installDeps runs scripts/install-deps.sh against an empty DEPS_ROOT, with
// a PATH that holds only the tools it needs and a fake apt-get, which logs
// its calls and, when installing, whether policy-rc.d forbids starting
// services. It returns the log and the script's error.
func installDeps(t *testing.T, root string, aptFails bool) (string, error) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "scripts", "install-deps.sh")
	bin := t.TempDir()
	for _, tool := range []string{"bash", "ls", "printf", "tee", "mkdir", "chmod", "rm", "dirname", "sort", "id", "sh", "cat"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Skipf("%s not found", tool)
		}
		if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	log := filepath.Join(t.TempDir(), "apt.log")
	exit := "0"
	if aptFails {
		exit = "100"
	}
	apt := `#!/bin/sh
policy="$DEPS_ROOT/usr/sbin/policy-rc.d"
case "$1" in
update) echo update >> "` + log + `" ;;
install)
  if [ -x "$policy" ]; then "$policy" clickhouse-server start; echo "install $* (policy-rc.d exits $?)" >> "` + log + `"
  else echo "install $* (no policy-rc.d)" >> "` + log + `"; fi
  exit ` + exit + ` ;;
esac
`
	sudo := "#!/bin/sh\nexec \"$@\"\n"
	for name, body := range map[string]string{"apt-get": apt, "sudo": sudo} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(filepath.Join(bin, "bash"), script)
	cmd.Env = []string{"PATH=" + bin, "DEPS_ROOT=" + root}
	out, err := cmd.CombinedOutput()
	b, _ := os.ReadFile(log)
	t.Logf("install-deps: %s", out)
	return string(b), err
}

// TestInstallDepsStartsNoServices: the install script does what its
// comments say: apt-get installs under a policy-rc.d that forbids starting
// services, which is gone afterwards, also when apt-get fails; an existing
// policy-rc.d is left alone.
func TestInstallDepsStartsNoServices(t *testing.T) {
	root := t.TempDir()
	policy := filepath.Join(root, "usr", "sbin", "policy-rc.d")
	log, err := installDeps(t, root, false)
	if err != nil {
		t.Fatalf("install-deps: %v\n%s", err, log)
	}
	if !strings.Contains(log, "update\n") || !strings.Contains(log, "clickhouse-server") || !strings.Contains(log, "prometheus-alertmanager") ||
		!strings.Contains(log, "(policy-rc.d exits 101)") {
		t.Errorf("apt-get calls: got\n%s\nwant an update, then an install of every server under a policy-rc.d that exits 101", log)
	}
	if _, err := os.Stat(policy); !os.IsNotExist(err) {
		t.Errorf("policy-rc.d after the install: %v, want it removed", err)
	}

	if _, err := installDeps(t, root, true); err == nil {
		t.Error("install-deps with a failing apt-get: got exit 0, want a failure")
	}
	if _, err := os.Stat(policy); !os.IsNotExist(err) {
		t.Errorf("policy-rc.d after a failed install: %v, want it removed", err)
	}

	own := "#!/bin/sh\nexit 0\n"
	if err := os.WriteFile(policy, []byte(own), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := installDeps(t, root, false); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(policy); err != nil || string(b) != own {
		t.Errorf("an existing policy-rc.d: got %q (%v), want it left as it was", b, err)
	}
}
