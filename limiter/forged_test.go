package limiter

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

// TestForgedDecisionIgnored: anyone who can write to the bucket puts a
// manual shed decision for a tenant, unsigned, expiring in 2105.
func TestForgedDecisionIgnored(t *testing.T) {
	srv := testenv.NATS(t)
	newPublisher(t, srv.URL)
	in := start(t, srv.URL, nil)
	js, err := jetstream.New(connect(t, srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, DecisionsBucketConfig().Bucket)
	if err != nil {
		t.Fatal(err)
	}
	forged := `{"tenant_id":"acme","scope":"all","action":"shed","rate_per_sec":0,"burst":0,"issued_at":"2026-01-01T00:00:00Z","expires_at":"2105-01-01T00:00:00Z","reason":"x","source":"manual","anomaly_id":""}`
	if _, err := kv.Put(ctx, "acme", []byte(forged)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if _, _, ok := in.Limit("acme"); ok {
		t.Fatal("the limiter applied a forged, unsigned decision")
	}
}
