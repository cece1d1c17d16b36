package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/limiter"
)

func TestThrottleReleaseDecisions(t *testing.T) {
	ns := testenv.NATS(t)
	ctx := context.Background()
	t.Chdir(t.TempDir())
	run := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		a := newApp(&out, &errb)
		root := a.root()
		root.SetArgs(append(args, "--nats-url", ns.URL))
		err := root.ExecuteContext(ctx)
		return out.String(), err
	}
	// A limiter in "a service" follows the CLI's decisions.
	nc, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	lim, err := limiter.New(limiter.DefaultConfig(), limiter.Deps{Conn: nc})
	if err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go lim.Run(lctx)

	out, err := run("throttle", "--tenant", "acme", "--rate", "7", "--burst", "14", "--for", "10m", "--reason", "incident 42", "--no-audit")
	if err != nil || !strings.Contains(out, "throttle acme") {
		t.Fatalf("throttle: %q, %v", out, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if r, b, ok := lim.Limit("acme"); ok && r == 7 && b == 14 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("limiter did not apply the CLI throttle")
		}
		time.Sleep(10 * time.Millisecond)
	}
	out, err = run("decisions", "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var ds []limiter.Decision
	if err := json.Unmarshal([]byte(out), &ds); err != nil || len(ds) != 1 {
		t.Fatalf("decisions json: %q, %v", out, err)
	}
	if d := ds[0]; d.TenantID != "acme" || d.Source != limiter.SourceManual || d.Reason != "incident 42" || d.RatePerSec != 7 {
		t.Fatalf("got %+v", d)
	}
	out, err = run("decisions")
	if err != nil || !strings.Contains(out, "acme") || !strings.Contains(out, "manual") {
		t.Fatalf("decisions text: %q, %v", out, err)
	}
	if _, err := run("release", "--tenant", "acme", "--no-audit"); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		if _, _, ok := lim.Limit("acme"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("limiter did not apply the release")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if out, err := run("decisions"); err != nil || !strings.Contains(out, "no live decisions") {
		t.Fatalf("after release: %q, %v", out, err)
	}
	// Usage errors exit 2.
	for _, args := range [][]string{
		{"throttle", "--tenant", "a.b", "--rate", "1"},
		{"throttle", "--tenant", "acme"},
		{"decisions", "--format", "xml"},
	} {
		_, err := run(args...)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 2 {
			t.Errorf("%v: got %v, want exit 2", args, err)
		}
	}
}
