package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/limiter"
)

// signingKey creates a decisions key with keygen, points
// TENANTGUARD_DECISIONS_SIGNING_KEY_FILE at it for the rest of t, and
// returns its public key.
func signingKey(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "decisions.key")
	out, errOut, err := runCLI(t, "keygen", "-o", path)
	if err != nil {
		t.Fatalf("keygen: %v\n%s", err, errOut)
	}
	t.Setenv("TENANTGUARD_DECISIONS_SIGNING_KEY_FILE", path)
	return strings.TrimSpace(out)
}

func TestThrottleReleaseDecisions(t *testing.T) {
	ns := migratedNATS(t)
	ctx := context.Background()
	t.Chdir(t.TempDir())
	pubKey := signingKey(t)
	run := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		a := newApp(&out, &errb)
		root := a.root()
		root.SetArgs(append(args, "--nats-url", ns.URL))
		err := root.ExecuteContext(ctx)
		return out.String(), err
	}
	// A limiter in "a service" follows the CLI's decisions.
	lim := serviceLimiter(t, ns.URL, pubKey)

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

// cli runs tenantguard against the NATS at url and returns stdout, stderr
// and the exit code (0, or the exitError's).
func cli(t *testing.T, url string, args ...string) (string, string, int) {
	t.Helper()
	out, errOut, err := runCLI(t, append(args, "--nats-url", url)...)
	if err == nil {
		return out, errOut, 0
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		return out, err.Error(), 2 // main exits 2 for any other error
	}
	return out, ee.Error(), ee.code
}

// TestThrottleRefusesBadDecisions: what limiters would reject, or the audit
// table could not hold, fails with exit 2 and a clear error before
// anything is written.
func TestThrottleRefusesBadDecisions(t *testing.T) {
	ns := migratedNATS(t)
	t.Chdir(t.TempDir())
	signingKey(t)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"wrapping expiry", []string{"--for", "2562047h"}, "--for 2562047h0m0s is longer than decisions.max_manual_ttl (168h0m0s)"},
		{"past the cap", []string{"--for", "169h"}, "decisions.max_manual_ttl"},
		{"ANSI escapes in reason", []string{"--reason", "pwned \x1b[2J\x1b[31m"}, "--reason: control character U+001B at byte 6"},
		{"newline in reason", []string{"--reason", "a\nb"}, "control character U+000A"},
		{"C1 CSI in reason", []string{"--reason", "a\u009b31m"}, "control character U+009B"},
	} {
		args := append([]string{"throttle", "--tenant", "acme", "--rate", "1"}, c.args...)
		_, errOut, code := cli(t, ns.URL, args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%s: exit %d, %q; want exit 2 and %q", c.name, code, errOut, c.want)
		}
	}
	out, _, code := cli(t, ns.URL, "decisions", "--all")
	if code != 0 || !strings.Contains(out, "no live decisions") {
		t.Fatalf("after refused throttles: exit %d, %q; want an empty bucket", code, out)
	}
}

// TestDefaultSigningKey: without decisions.signing_key_file, throttle and
// release sign with the user's default key, made on first use (mode 0600),
// and `decisions` verifies what they wrote.
func TestDefaultSigningKey(t *testing.T) {
	ns := migratedNATS(t)
	t.Chdir(t.TempDir())
	home := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", home)
	t.Setenv("TENANTGUARD_DECISIONS_SIGNING_KEY_FILE", "")
	if _, errOut, code := cli(t, ns.URL, "throttle", "--tenant", "acme", "--rate", "2"); code != 0 {
		t.Fatalf("throttle without a configured key: exit %d, %q; want 0", code, errOut)
	}
	fi, err := os.Stat(filepath.Join(home, "tenantguard", "decisions.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("default key: %v, mode %v; want a 0600 file", err, fi)
	}
	out, errOut, code := cli(t, ns.URL, "decisions")
	if code != 0 || !strings.Contains(out, "acme") || !strings.Contains(out, "ok") {
		t.Fatalf("decisions: exit %d, %q %q; want acme's verified decision", code, out, errOut)
	}
	if _, errOut, code := cli(t, ns.URL, "release", "--tenant", "acme"); code != 0 {
		t.Fatalf("release without a configured key: exit %d, %q; want 0", code, errOut)
	}
}

// TestDecisionsEscapesControlCharacters: an entry written before reasons
// were checked (or by anyone with write access) may hold ANSI escapes;
// `tenantguard decisions` prints them escaped (text, and JSON for DEL, C1
// and format characters, which encoding/json leaves raw), and says the
// entry does not verify.
func TestDecisionsEscapesControlCharacters(t *testing.T) {
	ns := migratedNATS(t)
	t.Chdir(t.TempDir())
	signingKey(t)
	if _, errOut, code := cli(t, ns.URL, "throttle", "--tenant", "good", "--rate", "3", "--reason", "Überlast 🚦"); code != 0 {
		t.Fatalf("throttle: exit %d %s", code, errOut)
	}
	nc := testenv.Connect(t, ns.URL)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), limiter.DecisionsBucketConfig().Bucket)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	old := `{"tenant_id":"evil","scope":"all","action":"shed","rate_per_sec":0,"burst":0,"issued_at":"` + now.Format(time.RFC3339) +
		`","expires_at":"` + now.Add(time.Hour).Format(time.RFC3339) + `","reason":"\u001b[2J\u001b[31mall clear\u009b0m\u202e","source":"manual","anomaly_id":""}`
	if _, err := kv.Put(context.Background(), "evil", []byte(old)); err != nil {
		t.Fatal(err)
	}
	out, _, code := cli(t, ns.URL, "decisions")
	if code != 0 {
		t.Fatalf("decisions: exit %d", code)
	}
	if strings.ContainsAny(out, "\x1b\u009b\u202e") {
		t.Fatalf("decisions printed raw control characters: %q", out)
	}
	if !strings.Contains(out, `\x1b[2J\x1b[31mall clear\u009b0m\u202e`) || !strings.Contains(out, "unsigned") {
		t.Fatalf("decisions: %q; want the reason escaped and the entry marked unsigned", out)
	}
	if !strings.Contains(out, "Überlast 🚦") || !strings.Contains(out, " ok ") {
		t.Fatalf("decisions: %q; want the signed decision's reason as it is, signature ok", out)
	}
	out, _, code = cli(t, ns.URL, "decisions", "--format", "json")
	if code != 0 || strings.ContainsAny(out, "\x1b\u009b\u202e") {
		t.Fatalf("decisions --format json: exit %d, raw control characters in %q", code, out)
	}
	var ds []struct {
		limiter.Decision
		Signature string `json:"signature"`
	}
	if err := json.Unmarshal([]byte(out), &ds); err != nil || len(ds) != 2 {
		t.Fatalf("decisions --format json: %v, %q", err, out)
	}
	if ds[0].Reason != "\x1b[2J\x1b[31mall clear\u009b0m\u202e" || ds[0].Signature != limiter.RejectUnsigned || ds[1].Signature != "ok" {
		t.Fatalf("decisions --format json: got %+v; want the exact reason after decoding, unsigned then ok", ds)
	}
}

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	path := filepath.Join(dir, "k.pem")
	out, _, err := runCLI(t, "keygen", "-o", path)
	if err != nil {
		t.Fatal(err)
	}
	pub := strings.TrimSpace(out)
	if _, err := limiter.ParsePublicKey(pub); err != nil {
		t.Fatalf("keygen printed %q: %v", out, err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", st, err)
	}
	again, _, err := runCLI(t, "keygen", "--public", path)
	if err != nil || strings.TrimSpace(again) != pub {
		t.Fatalf("keygen --public: %q, %v; want %q", again, err, pub)
	}
	var ee *exitError
	if _, _, err := runCLI(t, "keygen", "-o", path); !errors.As(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), "never overwrites") {
		t.Fatalf("keygen over an existing key: %v, want exit 2", err)
	}
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), "BEGIN PRIVATE KEY") {
		t.Fatal("the key was overwritten")
	}
}

// TestRunNeedsSigningKey: with decisions on, run fails at once on a
// configured key it cannot read, instead of writing decisions every
// limiter ignores.
func TestRunNeedsSigningKey(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("TENANTGUARD_NATS_URL", "nats://127.0.0.1:1")
	for _, c := range []struct{ key, want string }{
		{"missing.key", "missing.key: no such file"},
	} {
		t.Setenv("TENANTGUARD_DECISIONS_SIGNING_KEY_FILE", c.key)
		done := make(chan error, 1)
		go func() { _, _, err := runCLI(t, "run"); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("run with key %q: %v, want an error naming %q", c.key, err, c.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("run with key %q did not fail at once", c.key)
		}
	}
}

// TestThrottleShadow: throttle --shadow publishes a signed shadow decision
// that a limiter follows without rejecting; decisions shows the mode.
func TestThrottleShadow(t *testing.T) {
	ns := migratedNATS(t)
	t.Chdir(t.TempDir())
	pubKey := signingKey(t)
	lim := serviceLimiter(t, ns.URL, pubKey)

	out, _, code := cli(t, ns.URL, "throttle", "--tenant", "acme", "--rate", "1", "--burst", "1", "--shadow")
	if code != 0 || !strings.Contains(out, "shadow") {
		t.Fatalf("throttle --shadow: %q, exit %d", out, code)
	}
	testenv.Eventually(t, 5*time.Second, "limiter holds the shadow decision", func() bool {
		d, ok := lim.Decision("acme", limiter.ScopeAll)
		return ok && d.Shadow()
	})
	for i := range 20 {
		if !lim.Allow("acme") {
			t.Fatalf("request %d rejected under a shadow throttle", i)
		}
	}
	if out, _, code = cli(t, ns.URL, "throttle", "--tenant", "beta", "--rate", "5"); code != 0 {
		t.Fatalf("throttle: %q, exit %d", out, code)
	}
	out, _, code = cli(t, ns.URL, "decisions", "--format", "json")
	var ds []struct {
		TenantID string `json:"tenant_id"`
		Mode     string `json:"mode"`
	}
	if err := json.Unmarshal([]byte(out), &ds); err != nil || code != 0 || len(ds) != 2 {
		t.Fatalf("decisions json: %q, %v, exit %d", out, err, code)
	}
	for _, d := range ds {
		want := map[string]string{"acme": "shadow", "beta": "enforce"}[d.TenantID]
		if d.Mode != want {
			t.Errorf("%s: mode %q, want %q", d.TenantID, d.Mode, want)
		}
	}
	out, _, _ = cli(t, ns.URL, "decisions")
	if !strings.Contains(out, "MODE") || !strings.Contains(out, "shadow") || !strings.Contains(out, "enforce") {
		t.Fatalf("decisions text lacks the mode:\n%s", out)
	}
}

// TestThrottlePublishesTheBurstItPrints: without --burst the CLI resolves
// the default burst before it signs, so the value in the bucket (which the
// audit trail records) carries the burst the CLI printed, not 0.
func TestThrottlePublishesTheBurstItPrints(t *testing.T) {
	ns := migratedNATS(t)
	t.Chdir(t.TempDir())
	signingKey(t)
	for _, c := range []struct {
		args      []string
		wantBurst uint32
		wantOut   string
	}{
		{[]string{"--tenant", "acme", "--rate", "2.5"}, 3, "burst 3"},
		{[]string{"--tenant", "beta", "--rate", "2", "--burst", "2"}, 2, "burst 2"},
		{[]string{"--tenant", "gamma", "--rate", "0"}, 0, "every request refused"},
	} {
		out, errOut, code := cli(t, ns.URL, append([]string{"throttle"}, c.args...)...)
		if code != 0 || !strings.Contains(out, c.wantOut) {
			t.Fatalf("throttle %v: exit %d, %q %q; want %q", c.args, code, out, errOut, c.wantOut)
		}
		nc, err := nats.Connect(ns.URL)
		if err != nil {
			t.Fatal(err)
		}
		js, _ := jetstream.New(nc)
		kv, err := js.KeyValue(context.Background(), limiter.DecisionsBucketConfig().Bucket)
		if err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(context.Background(), c.args[1])
		nc.Close()
		if err != nil {
			t.Fatal(err)
		}
		var d limiter.Decision
		if err := json.Unmarshal(e.Value(), &d); err != nil {
			t.Fatal(err)
		}
		if d.Burst != c.wantBurst {
			t.Errorf("throttle %v: got burst %d in the bucket, want %d (printed %q)", c.args, d.Burst, c.wantBurst, strings.TrimSpace(out))
		}
	}
}

// serviceLimiter runs a limiter as a service would, trusting pubKey,
// until the test ends.
func serviceLimiter(t *testing.T, url, pubKey string) *limiter.Limiter {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	lcfg := limiter.DefaultConfig()
	lcfg.TrustedKeys = []string{pubKey}
	lim, err := limiter.New(lcfg, limiter.Deps{Conn: nc})
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = lim.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; nc.Close() })
	return lim
}
