package limiter

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/provision"
)

// DecisionsBucketConfig is the KV config of tenantguard_decisions: one
// value per key (the latest decision), file storage.
func DecisionsBucketConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:       event.DecisionsBucket,
		Description:  "tenantguard throttle and circuit decisions, key <tenant_id>[.<scope>]",
		History:      1,
		Storage:      jetstream.FileStorage,
		MaxValueSize: MaxDecisionSize,
	}
}

// PresenceBucketConfig is the KV config of tenantguard_limiters: keys
// <group>.<instance_id> that expire after ttl without a heartbeat.
func PresenceBucketConfig(ttl time.Duration) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      event.LimitersBucket,
		Description: "tenantguard limiter presence, key <group>.<instance_id>",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.MemoryStorage,
	}
}

// EnsureBuckets creates or updates tenantguard_decisions and
// tenantguard_limiters (presenceTTL is the presence keys' max age) with
// replicas copies each, never lowering an existing bucket's replica count:
// it returns the buckets that kept more. Only `tenantguard run` and
// `tenantguard migrate` call it; limiters and publishers open the buckets
// as they are and never create or change them.
func EnsureBuckets(ctx context.Context, js jetstream.JetStream, replicas int, presenceTTL time.Duration) ([]provision.Kept, error) {
	if replicas < 1 || replicas > 5 {
		return nil, fmt.Errorf("limiter: bucket replicas %d must be 1 to 5", replicas)
	}
	if presenceTTL <= 0 {
		presenceTTL = DefaultConfig().PresenceTTL
	}
	var kept []provision.Kept
	for _, kc := range []jetstream.KeyValueConfig{DecisionsBucketConfig(), PresenceBucketConfig(presenceTTL)} {
		kc.Replicas = replicas
		k, err := provision.Bucket(ctx, js, kc)
		if err != nil {
			return kept, err
		}
		if k != nil {
			kept = append(kept, *k)
		}
	}
	return kept, nil
}

// openBucket returns the bucket as it is; an error that says to start
// `tenantguard run` when it is missing (provision.ErrMissing).
func openBucket(ctx context.Context, js jetstream.JetStream, name string) (jetstream.KeyValue, error) {
	return provision.OpenBucket(ctx, js, name)
}
