package limiter

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/provision"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

// TestPublisherAndLimiterNeverCreateBuckets: without `tenantguard run` or
// `migrate`, a publisher fails with an error that says so, and a running
// limiter waits for the buckets instead of creating them.
func TestPublisherAndLimiterNeverCreateBuckets(t *testing.T) {
	srv := testenv.NATS(t)
	nc := connect(t, srv.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := NewPublisher(ctx, nc, WithSigner(testSigner(t, 1)))
	if !errors.Is(err, provision.ErrMissing) {
		t.Fatalf("NewPublisher without the bucket: got %v, want provision.ErrMissing", err)
	}
	if want := "bucket tenantguard_decisions not found: start `tenantguard run` or run `tenantguard migrate` first"; err.Error() != want {
		t.Errorf("got error %q, want %q", err, want)
	}

	lctx, lcancel := context.WithCancel(context.Background())
	cfg := DefaultConfig()
	cfg.TrustedKeys = []string{FormatPublicKey(testSigner(t, 1).PublicKey())}
	var logs syncBuffer
	l, err := New(cfg, Deps{Conn: connect(t, srv.URL), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = l.Run(lctx) }()
	time.Sleep(3 * time.Second) // past the presence wait and a heartbeat
	lcancel()
	<-done
	if want := "bucket tenantguard_decisions not found: start `tenantguard run`"; !strings.Contains(logs.String(), want) {
		t.Errorf("limiter logs: got %q, want them to contain %q", logs.String(), want)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{event.DecisionsBucket, event.LimitersBucket} {
		if _, err := js.KeyValue(ctx, b); !errors.Is(err, jetstream.ErrBucketNotFound) {
			t.Errorf("bucket %s after a limiter ran: got %v, want ErrBucketNotFound", b, err)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func bucketReplicasOf(t *testing.T, js jetstream.JetStream, bucket string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas
}

// TestEnsureBucketsReplicasInCluster: the buckets get the configured
// replica count; a later EnsureBuckets with fewer keeps the higher count
// and says so; limiters and publishers leave it alone.
func TestEnsureBucketsReplicasInCluster(t *testing.T) {
	c := testenv.NATSClusterOf(t, 3)
	nc := connect(t, c.URL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if kept, err := EnsureBuckets(ctx, js, 3, 0); err != nil || len(kept) != 0 {
		t.Fatalf("EnsureBuckets(3): kept %v, err %v; want nothing kept, no error", kept, err)
	}
	buckets := []string{event.DecisionsBucket, event.LimitersBucket}
	for _, b := range buckets {
		if got, want := bucketReplicasOf(t, js, b), 3; got != want {
			t.Errorf("bucket %s: got %d replicas, want %d", b, got, want)
		}
	}
	kept, err := EnsureBuckets(ctx, js, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(kept), 2; got != want {
		t.Fatalf("EnsureBuckets(1) on R3 buckets: got %d kept, want %d", got, want)
	}
	for i, k := range kept {
		if k.Name != buckets[i] || k.Have != 3 || k.Want != 1 || !strings.Contains(k.String(), "keeps 3 replicas") {
			t.Errorf("kept[%d]: got %+v (%s), want %s with 3 kept over 1", i, k, k, buckets[i])
		}
	}
	pub, err := NewPublisher(ctx, nc, WithSigner(testSigner(t, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Put(ctx, throttle("acme", 5, 5, SourceManual, time.Hour)); err != nil {
		t.Fatal(err)
	}
	lim := start(t, c.URL(), nil)
	testenv.Eventually(t, 10*time.Second, "the throttle applied", func() bool { r, _, ok := lim.Limit("acme"); return ok && r == 5 })
	for _, b := range buckets {
		if got, want := bucketReplicasOf(t, js, b), 3; got != want {
			t.Errorf("bucket %s after EnsureBuckets(1), a publisher and a limiter: got %d replicas, want %d", b, got, want)
		}
	}
	if _, err := EnsureBuckets(ctx, js, 6, 0); err == nil {
		t.Errorf("EnsureBuckets(6): got no error, want one")
	}
}
