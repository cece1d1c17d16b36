package event_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

// TestPartitionMatchesServer publishes events of many tenants through a
// stream with the partition transform of a real nats-server, reads back the
// stored subjects, and checks each partition token equals Partition; it also
// checks consumers filter on the partitioned subjects, and that a subject
// of the wrong shape stays where it was published.
func TestPartitionMatchesServer(t *testing.T) {
	srv := testenv.NATS(t)
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const tenants = 3000
	for _, n := range []int{1, 7, 16, 1024} {
		name := fmt.Sprintf("PARTITION_%d", n)
		s, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name:     name,
			Subjects: []string{event.UsageSubjects},
			Storage:  jetstream.MemoryStorage,
			SubjectTransform: &jetstream.SubjectTransformConfig{
				Source: event.PartitionSource, Destination: event.PartitionDestination(n),
			},
		})
		if err != nil {
			t.Fatalf("n=%d: create stream: %v", n, err)
		}
		want := map[string]int{} // tenant -> partition
		perPartition := map[int]uint64{}
		for i := range tenants {
			tenant := fmt.Sprintf("t%d-%x", i, i*7919)
			if i%3 == 0 {
				tenant = strings.ToUpper(tenant) + "_Z"
			}
			want[tenant] = event.Partition(tenant, n)
			perPartition[want[tenant]]++
			if _, err := js.Publish(ctx, event.Subject(tenant, "api_request"), []byte("{}")); err != nil {
				t.Fatal(err)
			}
		}
		for _, stray := range []string{"tenantguard.usage.onlytenant", "tenantguard.usage.a.b.c"} {
			if _, err := js.Publish(ctx, stray, []byte("{}")); err != nil {
				t.Fatal(err)
			}
		}
		seen, strays := 0, 0
		for seq := uint64(1); seq <= tenants+2; seq++ {
			m, err := s.GetMsg(ctx, seq)
			if err != nil {
				t.Fatalf("n=%d: get %d: %v", n, seq, err)
			}
			if strings.HasPrefix(m.Subject, "tenantguard.usage.") {
				strays++
				continue
			}
			var p int
			var tenant, kind string
			f := strings.Split(m.Subject, ".")
			if len(f) != 5 || f[1] != "partitioned" {
				t.Fatalf("n=%d: stored subject %q, want tenantguard.partitioned.<p>.<tenant>.<kind>", n, m.Subject)
			}
			if _, err := fmt.Sscan(f[2], &p); err != nil {
				t.Fatal(err)
			}
			tenant, kind = f[3], f[4]
			if p != want[tenant] {
				t.Fatalf("n=%d: tenant %q: server partition %d, Partition gives %d", n, tenant, p, want[tenant])
			}
			orig, err := event.OriginalSubject(m.Subject, n)
			if err != nil || orig != event.Subject(tenant, kind) {
				t.Fatalf("n=%d: OriginalSubject(%q) = %q, %v; want %q", n, m.Subject, orig, err, event.Subject(tenant, kind))
			}
			seen++
		}
		if seen != tenants || strays != 2 {
			t.Fatalf("n=%d: got %d partitioned and %d strays, want %d and 2", n, seen, strays, tenants)
		}
		for _, p := range []int{0, n - 1, n / 2} {
			c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{FilterSubject: event.PartitionSubjects(p), AckPolicy: jetstream.AckExplicitPolicy})
			if err != nil {
				t.Fatalf("n=%d: consumer on %s: %v", n, event.PartitionSubjects(p), err)
			}
			info, err := c.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.NumPending != perPartition[p] {
				t.Fatalf("n=%d: consumer on partition %d: got %d pending, want %d", n, p, info.NumPending, perPartition[p])
			}
		}
		c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{FilterSubject: event.UsageSubjects, AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			t.Fatal(err)
		}
		if info, err := c.Info(ctx); err != nil || info.NumPending != 2 {
			t.Fatalf("n=%d: strays consumer: got %v pending (%v), want 2", n, info.NumPending, err)
		}
		if err := js.DeleteStream(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOriginalSubject(t *testing.T) {
	p := event.Partition("acme", 16)
	other := (p + 1) % 16
	tests := []struct {
		subject string
		want    string
		ok      bool
	}{
		{event.PartitionedSubject(p, "acme", "api_request"), "tenantguard.usage.acme.api_request", true},
		{"tenantguard.usage.acme.api_request", "tenantguard.usage.acme.api_request", true},
		{"tenantguard.usage.acme", "tenantguard.usage.acme", true}, // a stray: the subject check judges it
		{event.PartitionedSubject(other, "acme", "api_request"), "tenantguard.usage.acme.api_request", false},
		{fmt.Sprintf("tenantguard.partitioned.0%d.acme.api_request", p), "tenantguard.usage.acme.api_request", false},
		{"tenantguard.partitioned.x.acme.api_request", "tenantguard.usage.acme.api_request", false},
		{"tenantguard.partitioned.3", "tenantguard.partitioned.3", false},
		{"tenantguard.partitioned.3.acme", "tenantguard.usage.acme", false},
	}
	for _, tt := range tests {
		got, err := event.OriginalSubject(tt.subject, 16)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("OriginalSubject(%q) = %q, %v; want %q, ok %v", tt.subject, got, err, tt.want, tt.ok)
		}
	}
}

func TestPartitionBounds(t *testing.T) {
	for _, n := range []int{-1, 0} {
		if got := event.Partition("acme", n); got != 0 {
			t.Errorf("Partition(acme, %d) = %d, want 0", n, got)
		}
	}
	for _, n := range []int{1, 2, 16, event.MaxPartitions} {
		for _, tenant := range []string{"a", "acme", "Z9_-x"} {
			if got := event.Partition(tenant, n); got < 0 || got >= n {
				t.Errorf("Partition(%q, %d) = %d, want 0..%d", tenant, n, got, n-1)
			}
		}
	}
}
