package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/partition"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

// migratedNATS starts an embedded NATS server and prepares it with
// `tenantguard migrate --clickhouse=false`, as an operator would before
// the first throttle.
func migratedNATS(t *testing.T) *testenv.NATSServer {
	t.Helper()
	ns := testenv.NATS(t)
	if out, errOut, code := cli(t, ns.URL, "migrate", "--clickhouse=false"); code != 0 {
		t.Fatalf("migrate --clickhouse=false: exit %d, %q %q", code, out, errOut)
	}
	return ns
}

// natsAssets are the JetStream streams behind tenantguard's streams and
// buckets.
var natsAssets = []string{event.UsageStream, event.DLQStream, event.CorrectionsStream,
	"KV_" + partition.Bucket, "KV_" + event.DecisionsBucket, "KV_" + event.LimitersBucket}

// streamReplicas returns each existing asset's replica count.
func streamReplicas(t *testing.T, js jetstream.JetStream) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := map[string]int{}
	for _, n := range natsAssets {
		s, err := js.Stream(ctx, n)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("stream %s: %v", n, err)
		}
		got[n] = s.CachedInfo().Config.Replicas
	}
	return got
}

func jsFor(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// TestCLINeverCreatesStreamsOrBuckets: before `run` or `migrate`, every
// command that uses NATS exits 1 and says what to run, and creates nothing.
func TestCLINeverCreatesStreamsOrBuckets(t *testing.T) {
	ns := testenv.NATS(t)
	t.Chdir(t.TempDir())
	signingKey(t)
	bucket := "bucket tenantguard_decisions not found: start `tenantguard run` or run `tenantguard migrate` first"
	stream := "stream TENANTGUARD_USAGE not found: start `tenantguard run` or run `tenantguard migrate` first"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"throttle", "--tenant", "acme", "--rate", "1"}, bucket},
		{[]string{"release", "--tenant", "acme"}, bucket},
		{[]string{"decisions"}, bucket},
		{[]string{"loadgen", "--count", "10", "--tenants", "2"}, stream},
	} {
		out, errOut, code := cli(t, ns.URL, c.args...)
		if code != 1 || !strings.Contains(errOut, c.want) {
			t.Errorf("%s: exit %d, %q %q; want exit 1 and %q", c.args[0], code, out, errOut, c.want)
		}
	}
	if got := streamReplicas(t, jsFor(t, ns.URL)); len(got) != 0 {
		t.Errorf("after the commands: got streams %v, want none", got)
	}
}

// TestCLIKeepsClusterReplicas: on a 3-node cluster, `migrate` creates every
// stream and bucket with 3 replicas; then every command that touches NATS,
// run with the default config (1 replica), and the emitter SDK leave them
// at 3, and `migrate` with 1 replica keeps 3 and warns.
func TestCLIKeepsClusterReplicas(t *testing.T) {
	c := testenv.NATSClusterOf(t, 3)
	url := c.URL()
	t.Chdir(t.TempDir())
	signingKey(t)
	js := jsFor(t, url)
	want3 := func(after string) {
		t.Helper()
		got := streamReplicas(t, js)
		for _, n := range natsAssets {
			if got[n] != 3 {
				t.Errorf("after %s: %s has %d replicas, want 3", after, n, got[n])
			}
		}
	}
	t.Setenv("TENANTGUARD_COLLECTOR_STREAM_REPLICAS", "3")
	t.Setenv("TENANTGUARD_DECISIONS_REPLICAS", "3")
	if out, errOut, code := cli(t, url, "migrate", "--clickhouse=false"); code != 0 || !strings.Contains(out, "replicas 3") {
		t.Fatalf("migrate R3: exit %d, %q %q", code, out, errOut)
	}
	want3("migrate with replicas 3")
	t.Setenv("TENANTGUARD_COLLECTOR_STREAM_REPLICAS", "1")
	t.Setenv("TENANTGUARD_DECISIONS_REPLICAS", "1")

	for _, args := range [][]string{
		{"loadgen", "--count", "200", "--tenants", "3", "--rate", "0"},
		{"throttle", "--tenant", "acme", "--rate", "5"},
		{"decisions"},
		{"release", "--tenant", "acme"},
	} {
		if out, errOut, code := cli(t, url, args...); code != 0 {
			t.Fatalf("%s: exit %d, %q %q", args[0], code, out, errOut)
		}
		want3(args[0])
	}
	// correct --daemon publishes a request to TENANTGUARD_CORRECTIONS; no
	// daemon answers here, so it times out, but the stream stays R3.
	if _, _, code := cli(t, url, "correct", "--daemon", "--timeout", "1s", "--tenant", "acme", "--void", "--reason", "test", "e1"); code == 0 {
		t.Errorf("correct --daemon without a daemon: exit 0, want a failure")
	}
	want3("correct --daemon")

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	em, err := emit.New(nc, emit.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 10 {
		if err := em.Emit(ctx, event.Event{ID: "sdk-" + string(rune('a'+i)), TenantID: "acme", Kind: event.KindAPIRequest,
			Time: time.Now().UTC(), Quantity: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if err := em.Close(ctx); err != nil {
		t.Fatal(err)
	}
	want3("emit")

	out, errOut, code := cli(t, url, "migrate", "--clickhouse=false")
	if code != 0 {
		t.Fatalf("migrate R1: exit %d, %q %q", code, out, errOut)
	}
	if want := "keeps 3 replicas (configured 1)"; strings.Count(errOut, want) != len(natsAssets) {
		t.Errorf("migrate R1 over R3: got %q, want %d warnings with %q", errOut, len(natsAssets), want)
	}
	want3("migrate with replicas 1")
}

// TestThrottleSurvivesDecisionsLeaderKill: with R3 buckets, killing the
// node that leads tenantguard_decisions leaves throttle, decisions and
// release working, and a limiter follows them.
func TestThrottleSurvivesDecisionsLeaderKill(t *testing.T) {
	c := testenv.NATSClusterOf(t, 3)
	url := c.URL()
	t.Chdir(t.TempDir())
	pubKey := signingKey(t)
	t.Setenv("TENANTGUARD_COLLECTOR_STREAM_REPLICAS", "3")
	t.Setenv("TENANTGUARD_DECISIONS_REPLICAS", "3")
	if out, errOut, code := cli(t, url, "migrate", "--clickhouse=false"); code != 0 {
		t.Fatalf("migrate: exit %d, %q %q", code, out, errOut)
	}
	lim := serviceLimiter(t, url, pubKey)
	if out, errOut, code := cli(t, url, "throttle", "--tenant", "before", "--rate", "3"); code != 0 {
		t.Fatalf("throttle before the kill: exit %d, %q %q", code, out, errOut)
	}
	testenv.Eventually(t, 10*time.Second, "the limiter applies the first throttle", func() bool {
		r, _, ok := lim.Limit("before")
		return ok && r == 3
	})

	killed := c.KillStreamLeader(t, "KV_"+event.DecisionsBucket)
	start := time.Now()
	out, errOut, code := cli(t, url, "throttle", "--tenant", "after", "--rate", "4")
	if code != 0 {
		t.Fatalf("throttle right after killing n%d (the bucket's leader): exit %d, %q %q", killed+1, code, out, errOut)
	}
	t.Logf("killed n%d (leader of KV_%s); throttle took %s", killed+1, event.DecisionsBucket, time.Since(start).Round(10*time.Millisecond))
	out, errOut, code = cli(t, url, "decisions")
	if code != 0 || !strings.Contains(out, "before") || !strings.Contains(out, "after") {
		t.Fatalf("decisions after the kill: exit %d, %q %q; want both tenants", code, out, errOut)
	}
	// A limiter whose watch consumer lived on the killed node sees new
	// decisions once nats.go's ordered consumer misses its heartbeats and
	// is recreated on a live node: allow for that.
	written := time.Now()
	testenv.Eventually(t, 60*time.Second, "the limiter applies the throttle written after the kill", func() bool {
		r, _, ok := lim.Limit("after")
		return ok && r == 4
	})
	t.Logf("the limiter applied it %s after it was written", time.Since(written).Round(10*time.Millisecond))
	if out, errOut, code := cli(t, url, "release", "--tenant", "before"); code != 0 {
		t.Fatalf("release after the kill: exit %d, %q %q", code, out, errOut)
	}
	testenv.Eventually(t, 60*time.Second, "the limiter applies the release", func() bool {
		_, _, ok := lim.Limit("before")
		return !ok
	})
	c.RestartNode(t, killed)
	testenv.Eventually(t, 30*time.Second, "the bucket back at 3 current replicas", func() bool {
		s, err := jsFor(t, url).Stream(context.Background(), "KV_"+event.DecisionsBucket)
		if err != nil {
			return false
		}
		info := s.CachedInfo()
		if info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			return false
		}
		for _, r := range info.Cluster.Replicas {
			if !r.Current || r.Offline {
				return false
			}
		}
		return info.Config.Replicas == 3
	})
}
