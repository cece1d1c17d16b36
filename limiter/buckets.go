package limiter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
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

// openBucket returns the bucket, creating it with cfg when it is missing.
// An existing bucket is used as it is, so instances with different
// settings never fight over its config.
func openBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err == nil {
		return kv, nil
	}
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("open bucket %s: %w", cfg.Bucket, err)
	}
	kv, err = js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, cfg.Bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}
