package collector

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/provision"
)

// StreamConfigs are the JetStream configs of TENANTGUARD_USAGE, with the
// transform that partitions it into config.Partitions by tenant, and
// TENANTGUARD_DLQ.
func StreamConfigs(config Config) []jetstream.StreamConfig {
	cfg := config.Stream
	usage := jetstream.StreamConfig{
		Name:        event.UsageStream,
		Description: "tenantguard usage events, wire format v1",
		Subjects:    []string{event.UsageSubjects},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  cfg.DuplicateWindow,
		MaxAge:      cfg.MaxAge,
		MaxBytes:    cfg.MaxBytes,
		MaxMsgSize:  event.MaxSize * 2, // bigger ones still reach the DLQ with a reason
		Replicas:    cfg.Replicas,
		Discard:     jetstream.DiscardOld,
		SubjectTransform: &jetstream.SubjectTransformConfig{
			Source:      event.PartitionSource,
			Destination: event.PartitionDestination(config.Partitions),
		},
	}
	usage.AllowBatchPublish = true // the emitter's fast batch publishing (nats-server >= 2.14)
	dlq := jetstream.StreamConfig{
		Name:        event.DLQStream,
		Description: "tenantguard events that failed validation; header Tenantguard-Reason says why",
		Subjects:    []string{event.DLQSubjects},
		Storage:     jetstream.FileStorage,
		Duplicates:  cfg.DuplicateWindow,
		MaxAge:      cfg.DLQMaxAge,
		Replicas:    cfg.Replicas,
	}
	return []jetstream.StreamConfig{usage, dlq}
}

// ProvisionStreams creates or updates TENANTGUARD_USAGE and TENANTGUARD_DLQ
// to config, never lowering an existing stream's replica count: it returns
// the streams that kept more replicas than config asks for. Only `tenantguard
// run` and `tenantguard migrate` call it; everything else uses
// OpenUsageStream.
func ProvisionStreams(ctx context.Context, js jetstream.JetStream, config Config) ([]provision.Kept, error) {
	var kept []provision.Kept
	for _, sc := range StreamConfigs(config) {
		k, err := provision.Stream(ctx, js, sc)
		if err != nil {
			return kept, err
		}
		if k != nil {
			kept = append(kept, *k)
		}
	}
	return kept, nil
}

// EnsureStreams is ProvisionStreams for callers that need not know what
// was kept (the collector, after the daemon has warned about it).
func EnsureStreams(ctx context.Context, js jetstream.JetStream, config Config) error {
	_, err := ProvisionStreams(ctx, js, config)
	return err
}

// OpenUsageStream returns TENANTGUARD_USAGE as it is, for publishers:
// a provision.MissingError that says to start `tenantguard run` or run
// `tenantguard migrate` when it does not exist. It changes nothing.
func OpenUsageStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	return provision.OpenStream(ctx, js, event.UsageStream)
}
