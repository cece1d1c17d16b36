package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/internal/daemon"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

// TestCLIWithoutNATSFailsFastAndHidesCredentials: the decision commands
// give up on an unreachable NATS within 5 s, exit 2, and name the server
// without its password.
func TestCLIWithoutNATSFailsFastAndHidesCredentials(t *testing.T) {
	bin := testenv.Binary(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)) // nothing listens there
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) {
			env = append(env, kv)
		}
	}
	keyFile := filepath.Join(t.TempDir(), "decisions.key")
	if _, err := daemon.WriteSigningKey(keyFile); err != nil {
		t.Fatal(err)
	}
	env = append(env, "TENANTGUARD_CLICKHOUSE_PASSWORD=secret-ch", "TENANTGUARD_LOG_LEVEL=debug",
		"TENANTGUARD_DECISIONS_SIGNING_KEY_FILE="+keyFile)
	for _, args := range [][]string{
		{"throttle", "--tenant", "acme", "--rate", "5"},
		{"release", "--tenant", "acme"},
		{"decisions"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, bin, append(args, "--nats-url", "nats://user:secret@"+addr)...)
		cmd.Dir, cmd.Env = t.TempDir(), env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		begin := time.Now()
		err := cmd.Run()
		took := time.Since(begin)
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%v: got %v, want exit status 2", args, err)
		}
		if took > 5*time.Second {
			t.Errorf("%v: took %s to fail, want at most 5s", args, took.Round(time.Millisecond))
		}
		if out := stdout.String() + stderr.String(); strings.Contains(out, "secret") {
			t.Errorf("%v: the output carries a credential:\n%s", args, out)
		}
		if !strings.Contains(stderr.String(), "nats://user:xxxxx@"+addr) {
			t.Errorf("%v: stderr does not name the server without its password:\n%s", args, stderr.String())
		}
	}
}
