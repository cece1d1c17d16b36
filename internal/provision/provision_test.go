package provision

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestStreamKeepsHigherReplicas(t *testing.T) {
	c := testenv.NATSClusterOf(t, 3)
	nc, err := nats.Connect(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := OpenStream(ctx, js, "S"); !errors.Is(err, ErrMissing) {
		t.Fatalf("OpenStream of a missing stream: got %v, want ErrMissing", err)
	}
	if _, err := OpenBucket(ctx, js, "b"); !errors.Is(err, ErrMissing) {
		t.Fatalf("OpenBucket of a missing bucket: got %v, want ErrMissing", err)
	}
	for _, c := range []struct {
		name         string
		replicas     int
		maxAge       time.Duration
		wantReplicas int
		wantKept     bool
	}{
		{"create R1", 1, time.Hour, 1, false},
		{"raise to R3", 3, time.Hour, 3, false},
		{"R1 keeps R3, other fields follow", 1, 2 * time.Hour, 3, true},
		{"0 reads as 1", 0, 2 * time.Hour, 3, true},
	} {
		kept, err := Stream(ctx, js, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Replicas: c.replicas, MaxAge: c.maxAge})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if (kept != nil) != c.wantKept {
			t.Errorf("%s: got kept %v, want kept %v", c.name, kept, c.wantKept)
		}
		s, err := OpenStream(ctx, js, "S")
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		if cfg.Replicas != c.wantReplicas || cfg.MaxAge != c.maxAge {
			t.Errorf("%s: got replicas %d max age %s, want %d and %s", c.name, cfg.Replicas, cfg.MaxAge, c.wantReplicas, c.maxAge)
		}

		kkept, err := Bucket(ctx, js, jetstream.KeyValueConfig{Bucket: "b", Replicas: c.replicas, TTL: c.maxAge})
		if err != nil {
			t.Fatalf("%s bucket: %v", c.name, err)
		}
		if (kkept != nil) != c.wantKept {
			t.Errorf("%s bucket: got kept %v, want kept %v", c.name, kkept, c.wantKept)
		}
		kv, err := OpenBucket(ctx, js, "b")
		if err != nil {
			t.Fatal(err)
		}
		if got, err := bucketReplicas(ctx, kv); err != nil || got != c.wantReplicas {
			t.Errorf("%s bucket: got %d replicas (%v), want %d", c.name, got, err, c.wantReplicas)
		}
	}
}

// TestConcurrentCreatesAllAnswered: replicas that start together create
// the same R3 stream and bucket at once, each through another node. The
// server answers only one of two equal creates in flight; every caller
// still gets its stream and bucket in seconds, not after its deadline.
func TestConcurrentCreatesAllAnswered(t *testing.T) {
	c := testenv.NATSClusterOf(t, 3)
	const callers = 3
	var jss []jetstream.JetStream
	for i := range callers {
		nc, err := nats.Connect(c.NodeURL(i % c.Nodes()))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		jss = append(jss, js)
	}
	for _, tc := range []struct {
		name   string
		create func(context.Context, jetstream.JetStream) error
	}{
		{"stream", func(ctx context.Context, js jetstream.JetStream) error {
			_, err := Stream(ctx, js, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Replicas: 3})
			return err
		}},
		{"bucket", func(ctx context.Context, js jetstream.JetStream) error {
			_, err := Bucket(ctx, js, jetstream.KeyValueConfig{Bucket: "b", Replicas: 3, TTL: time.Minute})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := make(chan error, callers)
			start := time.Now()
			for _, js := range jss {
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					errs <- tc.create(ctx, js)
				}()
			}
			for range callers {
				if err := <-errs; err != nil {
					t.Errorf("%s after %s: %v", tc.name, time.Since(start).Round(time.Millisecond), err)
				}
			}
			if took := time.Since(start); took > 8*time.Second {
				t.Errorf("%d concurrent creates took %s, want each answered within a few seconds", callers, took.Round(time.Millisecond))
			}
		})
	}
}
