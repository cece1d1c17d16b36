package collector

import (
	"errors"
	"fmt"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
)

// Config tunes the collector.
type Config struct {
	// Durable is the prefix of the JetStream consumers: <durable>-p<i>-ackall
	// for partition i and <durable>-strays-ackall. Default
	// "tenantguard-collector".
	Durable string `mapstructure:"durable"`
	// Partitions splits TENANTGUARD_USAGE by tenant; each partition has one
	// owner replica at a time. Change it only with every replica stopped
	// (docs/scale-out.md). 1 to 1024. Default 16.
	Partitions int `mapstructure:"partitions"`
	// LeaseTTL is how long a replica's partition leases live unrenewed: a
	// dead replica's partitions move after about this long. 2s to 5m.
	// Default 5s.
	LeaseTTL time.Duration `mapstructure:"lease_ttl"`
	// BatchMaxRows flushes a batch at this many events: the largest block
	// written to ClickHouse, and the bound on the collector's memory (about
	// 1 KiB per buffered event). Default 15000, which keeps the collector
	// under 256 MiB at saturation.
	BatchMaxRows int `mapstructure:"batch_max_rows"`
	// BatchMinWait flushes a batch once it is this old and no message is
	// waiting: idle, batches are small and fast; under load, messages keep
	// arriving during each insert and batches grow towards BatchMaxRows.
	// Default 5ms.
	BatchMinWait time.Duration `mapstructure:"batch_min_wait"`
	// BatchMinInterval is the least time from the end of one flush to the
	// next, unless a batch fills up (batch_max_rows) or reaches
	// batch_max_wait: under a steady load ClickHouse gets a block or two a
	// second, each a part to write, merge and search, instead of one per
	// insert round trip. A first event after a quiet spell still waits
	// only batch_min_wait. 0 to 1m. Default 500ms.
	BatchMinInterval time.Duration `mapstructure:"batch_min_interval"`
	// BatchMaxWait flushes a non-empty batch after this long even while
	// messages keep arriving. Default 500ms.
	BatchMaxWait time.Duration `mapstructure:"batch_max_wait"`
	// AckWait is how long JetStream waits for an ack before redelivering. Default 30s.
	AckWait time.Duration `mapstructure:"ack_wait"`
	// MaxAckPending caps each slot consumer's unacked messages. A batch
	// acks the last message of each slot it holds, which acks every earlier
	// one (AckAll), so it must exceed BatchMaxRows. Default 100000.
	MaxAckPending int `mapstructure:"max_ack_pending"`
	// RetryMin and RetryMax bound the backoff while ClickHouse is down. Defaults 200ms and 10s.
	RetryMin time.Duration `mapstructure:"retry_min"`
	RetryMax time.Duration `mapstructure:"retry_max"`
	// StallTimeout: the consumer counts as stalled, and the daemon as not
	// ready, when messages are pending but none was fetched or acked for
	// this long. Default 2m.
	StallTimeout time.Duration `mapstructure:"stall_timeout"`
	// Lateness is how old an event may be; at most 8760h (365 days).
	// Default 168h (7 days).
	Lateness time.Duration `mapstructure:"lateness"`
	// DedupHorizon checks every event against ClickHouse before it is
	// stored, so an id re-sent at any age within Lateness is stored once,
	// even after JetStream's duplicate window. Off, only redeliveries and
	// messages without a Nats-Msg-Id are checked. Default true.
	DedupHorizon bool `mapstructure:"dedup_horizon"`
	// CustomKinds are accepted besides the built-in kinds. Default none.
	CustomKinds []string `mapstructure:"custom_kinds"`
	// Stream configures TENANTGUARD_USAGE and TENANTGUARD_DLQ.
	Stream StreamConfig `mapstructure:"stream"`
}

// StreamConfig sets the limits of the streams the collector creates.
type StreamConfig struct {
	// DuplicateWindow is JetStream's Nats-Msg-Id dedup window. Default 2m.
	DuplicateWindow time.Duration `mapstructure:"duplicate_window"`
	// MaxAge drops stored messages older than this; 0 keeps them. Default 72h.
	MaxAge time.Duration `mapstructure:"max_age"`
	// MaxBytes caps the usage stream's size; -1 is unlimited. Default -1.
	MaxBytes int64 `mapstructure:"max_bytes"`
	// Replicas of each stream in a NATS cluster. Default 1.
	Replicas int `mapstructure:"replicas"`
	// DLQMaxAge keeps dead letters this long. Default 720h (30 days).
	DLQMaxAge time.Duration `mapstructure:"dlq_max_age"`
}

// MaxLateness bounds lateness: a year back keeps every accepted event time
// well inside what ClickHouse DateTime holds (1970 to 2106).
const MaxLateness = 365 * 24 * time.Hour

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Durable:          "tenantguard-collector",
		Partitions:       16,
		LeaseTTL:         5 * time.Second,
		BatchMaxRows:     15000,
		BatchMinWait:     5 * time.Millisecond,
		BatchMaxWait:     500 * time.Millisecond,
		BatchMinInterval: 500 * time.Millisecond,
		AckWait:          30 * time.Second,
		MaxAckPending:    100000,
		RetryMin:         200 * time.Millisecond,
		RetryMax:         10 * time.Second,
		StallTimeout:     2 * time.Minute,
		Lateness:         event.DefaultLateness,
		DedupHorizon:     true,
		Stream: StreamConfig{
			DuplicateWindow: 2 * time.Minute,
			MaxAge:          72 * time.Hour,
			MaxBytes:        -1,
			Replicas:        1,
			DLQMaxAge:       30 * 24 * time.Hour,
		},
	}
}

// Validate names every bad field.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, field, msg string) {
		if !ok {
			errs = append(errs, fmt.Errorf("collector.%s: %s", field, msg))
		}
	}
	check(c.Durable != "" && event.ValidTenantID(c.Durable), "durable", "must be a name of letters, digits, '-' or '_'")
	check(c.Partitions >= 1 && c.Partitions <= event.MaxPartitions, "partitions", "must be 1 to 1024")
	check(c.LeaseTTL >= 2*time.Second && c.LeaseTTL <= 5*time.Minute, "lease_ttl", "must be 2s to 5m")
	check(c.BatchMaxRows > 0 && c.BatchMaxRows <= 1_000_000, "batch_max_rows", "must be 1 to 1000000")
	check(c.BatchMinWait > 0 && c.BatchMinWait <= c.BatchMaxWait, "batch_min_wait", "must be > 0 and <= batch_max_wait")
	check(c.BatchMaxWait > 0 && c.BatchMaxWait <= time.Minute, "batch_max_wait", "must be > 0 and <= 1m")
	check(c.BatchMinInterval >= 0 && c.BatchMinInterval <= time.Minute, "batch_min_interval", "must be 0 to 1m")
	check(c.AckWait >= time.Second && c.AckWait <= 12*time.Hour, "ack_wait", "must be 1s to 12h")
	check(c.MaxAckPending > c.BatchMaxRows && c.MaxAckPending <= 10_000_000, "max_ack_pending", "must be greater than batch_max_rows and at most 10000000")
	check(c.RetryMin > 0 && c.RetryMax >= c.RetryMin, "retry_min", "must be > 0 and <= retry_max")
	check(c.RetryMax <= 10*time.Minute, "retry_max", "must be at most 10m")
	check(c.StallTimeout >= time.Second && c.StallTimeout <= 24*time.Hour, "stall_timeout", "must be 1s to 24h")
	check(c.Lateness > 0 && c.Lateness <= MaxLateness, "lateness", "must be > 0 and at most 8760h (365 days)")
	for _, k := range c.CustomKinds {
		check(event.ValidKindName(k), "custom_kinds", fmt.Sprintf("%q must match %s", k, event.KindPattern))
	}
	check(c.Stream.DuplicateWindow > 0, "stream.duplicate_window", "must be > 0")
	check(c.Stream.MaxAge >= 0 && (c.Stream.MaxAge == 0 || c.Stream.MaxAge >= c.Stream.DuplicateWindow), "stream.max_age", "must be 0 or >= duplicate_window")
	check(c.Stream.MaxBytes == -1 || c.Stream.MaxBytes > 0, "stream.max_bytes", "must be -1 or > 0")
	check(c.Stream.Replicas >= 1 && c.Stream.Replicas <= 5, "stream.replicas", "must be 1 to 5")
	check(c.Stream.DLQMaxAge >= 0, "stream.dlq_max_age", "must be >= 0")
	return errors.Join(errs...)
}
