package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/limiter"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nats://user:secret@127.0.0.1:4222", "nats://user:xxxxx@127.0.0.1:4222"},
		{"nats://a:secret@h1:4222,nats://h2:4222, tls://b:secret@h3", "nats://a:xxxxx@h1:4222,nats://h2:4222, tls://b:xxxxx@h3"},
		{"nats://secret@h:4222", "nats://xxxxx@h:4222"},
		{"user:secret@h:4222,h2", "user:xxxxx@h:4222,h2"},
		{"nats://user:p@ss:secret@h", "nats://user:xxxxx@h"},
		{`connect nats nats://user:secret@h:1: refused`, `connect nats nats://user:xxxxx@h:1: refused`},
		{"postgres://app:secret@db:5432/app?sslmode=disable", "postgres://app:xxxxx@db:5432/app?sslmode=disable"},
		{"postgres://app@db/app", "postgres://app@db/app"},
		{"host=db user=app password=secret dbname=app", "host=db user=app password=xxxxx dbname=app"},
		{"host=db password='se cret' dbname=app", "host=db password=xxxxx dbname=app"},
		{"http://h/hook?token=secret&x=1", "http://h/hook?token=xxxxx&x=1"},
		{"no secrets here: 127.0.0.1:9000, a@b", "no secrets here: 127.0.0.1:9000, a@b"},
	} {
		if got := redact(tc.in); got != tc.want {
			t.Errorf("redact(%q) got %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLogsAreRedacted(t *testing.T) {
	var buf bytes.Buffer
	a := newApp(&buf, &buf)
	log := a.logger("debug").With("url", "nats://u:secret1@h:4222")
	log.Warn("connect to postgres://app:secret2@db/app failed", "err", errors.New("dial nats://u:secret3@h: refused"),
		slog.Group("g", "dsn", "password=secret4"), "addrs", []string{"nats://tok_secret5@h"})
	if strings.Contains(buf.String(), "secret") {
		t.Fatalf("a log line carries a credential:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), "nats://u:xxxxx@h:4222") {
		t.Fatalf("the redacted address is missing:\n%s", buf.String())
	}
}

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
	keyPEM, _, err := limiter.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "decisions.key")
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
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
