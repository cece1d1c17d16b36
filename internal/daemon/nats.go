package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/anomaly/decide"
	"github.com/tenantguard/tenantguard/collector"
	"github.com/tenantguard/tenantguard/collector/correct"
	"github.com/tenantguard/tenantguard/collector/partition"
	"github.com/tenantguard/tenantguard/internal/provision"
	"github.com/tenantguard/tenantguard/internal/redact"
	"github.com/tenantguard/tenantguard/limiter"
)

// ConnectNATS dials cfg's servers and reconnects forever; by default it
// returns at once and keeps trying in the background while no server
// answers. extra options override these. name tells the server which part
// of tenantguard connects.
func ConnectNATS(cfg NATSConfig, log *slog.Logger, name string, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(cfg.Name + "-" + name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(64 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "component", name, "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "component", name, "url", nc.ConnectedUrlRedacted())
		}),
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.TLS.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.TLS.CAFile))
	}
	if cfg.TLS.CertFile != "" {
		opts = append(opts, nats.ClientCert(cfg.TLS.CertFile, cfg.TLS.KeyFile))
	}
	nc, err := nats.Connect(cfg.URL, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", redact.String(cfg.URL), err)
	}
	return nc, nil
}

// NewDecisionsPublisher returns a publisher of the decisions bucket on nc
// with the configured caps and trusted keys; signer, when not nil, signs
// what it writes (the daemon's engine, throttle and release).
func NewDecisionsPublisher(ctx context.Context, nc *nats.Conn, dc decide.Config, signer *limiter.Signer) (*limiter.Publisher, error) {
	opts := []limiter.PublisherOption{limiter.WithMaxTTL(dc.MaxManualTTL, dc.MaxAutoTTL)}
	if signer != nil {
		opts = append(opts, limiter.WithSigner(signer))
	}
	keys, err := limiter.ParsePublicKeys("decisions.trusted_keys", dc.TrustedKeys)
	if err != nil {
		return nil, err
	}
	opts = append(opts, limiter.WithTrustedKeys(keys...))
	pub, err := limiter.NewPublisher(ctx, nc, opts...)
	if errors.Is(err, provision.ErrMissing) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("decisions bucket (is JetStream enabled at %s?): %w", redact.String(nc.ConnectedUrlRedacted()), err)
	}
	return pub, nil
}

// provisionAttempt bounds one attempt of ProvisionNATS at start. It
// creates or updates six streams and buckets, each request asked again
// after provision.AnswerWait unanswered; replicas that start together on
// a loaded machine need more than 10 s for all six.
const provisionAttempt = 30 * time.Second

// ProvisionNATS creates or updates every stream and bucket tenantguard
// uses, as cfg configures them: TENANTGUARD_USAGE, TENANTGUARD_DLQ and
// TENANTGUARD_CORRECTIONS and the partition leases bucket
// tenantguard_partitions with collector.stream.replicas, and
// tenantguard_decisions and tenantguard_limiters with decisions.replicas.
// `run` and `migrate` call it, whichever stages are on; nothing else
// creates or changes them. It never lowers an existing replica count and
// returns what kept more replicas than configured, for the caller to warn
// about.
func ProvisionNATS(ctx context.Context, js jetstream.JetStream, cfg Config) ([]provision.Kept, error) {
	kept, err := collector.ProvisionStreams(ctx, js, cfg.Collector.Config)
	if err != nil {
		return kept, err
	}
	ccfg := correct.DefaultServiceConfig()
	ccfg.Replicas = cfg.Collector.Stream.Replicas
	k, err := correct.ProvisionStream(ctx, js, ccfg)
	if err != nil {
		return kept, err
	}
	if k != nil {
		kept = append(kept, *k)
	}
	pcfg := partition.Config{Partitions: cfg.Collector.Partitions, LeaseTTL: cfg.Collector.LeaseTTL, Replicas: cfg.Collector.Stream.Replicas}
	if k, err = provision.Bucket(ctx, js, partition.BucketConfig(pcfg)); err != nil {
		return kept, err
	}
	if k != nil {
		kept = append(kept, *k)
	}
	ks, err := limiter.EnsureBuckets(ctx, js, cfg.Decisions.Replicas, limiter.DefaultConfig().PresenceTTL)
	return append(kept, ks...), err
}
