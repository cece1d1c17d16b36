package metrics

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Config configures the per-tenant collector. Its keys live in the
// `exporter` section of the daemon config (exporter.max_tenant_series, ...).
type Config struct {
	// MaxTenantSeries is K: how many of the most active tenants get their own
	// `tenant` label; the rest are summed under tenant="__overflow__".
	// Default 500.
	MaxTenantSeries int `mapstructure:"max_tenant_series"`
	// IdleSeriesTTL removes a tenant's series (and forgets the tenant) after
	// it sent no event for this long. Default 1h.
	IdleSeriesTTL time.Duration `mapstructure:"idle_series_ttl"`
	// ActivityWindow is the time constant of the decayed event rate that
	// ranks tenants for the top-K. Default 5m.
	ActivityWindow time.Duration `mapstructure:"activity_window"`
	// LatencyBuckets are the classic upper bounds, in seconds, of
	// tenantguard_tenant_request_duration_seconds. Default
	// 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10.
	LatencyBuckets []float64 `mapstructure:"latency_buckets"`
	// NativeHistogramBucketFactor > 1 adds native (sparse) buckets to the
	// latency histogram, each at most this factor wider than the previous
	// one (1.1 is a good value). Default 0: classic buckets only.
	NativeHistogramBucketFactor float64 `mapstructure:"native_histogram_bucket_factor"`
	// NativeHistogramMaxBuckets caps native buckets per series; past it the
	// resolution halves. Default 160.
	NativeHistogramMaxBuckets int `mapstructure:"native_histogram_max_buckets"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		MaxTenantSeries:           500,
		IdleSeriesTTL:             time.Hour,
		ActivityWindow:            5 * time.Minute,
		LatencyBuckets:            []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		NativeHistogramMaxBuckets: defaultMaxBuckets,
	}
}

// maxTenantSeriesLimit bounds K so a typo cannot explode cardinality.
const maxTenantSeriesLimit = 100000

// Validate reports every bad field, prefixed with its config path.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, msg string) { errs = append(errs, fmt.Errorf("exporter.%s: %s", field, msg)) }
	if c.MaxTenantSeries < 1 || c.MaxTenantSeries > maxTenantSeriesLimit {
		bad("max_tenant_series", fmt.Sprintf("must be between 1 and %d", maxTenantSeriesLimit))
	}
	if c.IdleSeriesTTL <= 0 {
		bad("idle_series_ttl", "must be > 0")
	}
	if c.ActivityWindow <= 0 {
		bad("activity_window", "must be > 0")
	}
	if len(c.LatencyBuckets) == 0 {
		bad("latency_buckets", "must not be empty")
	}
	for i, b := range c.LatencyBuckets {
		if math.IsNaN(b) || math.IsInf(b, 0) || b <= 0 {
			bad("latency_buckets", fmt.Sprintf("bucket %d (%v) must be finite and > 0", i, b))
		} else if i > 0 && b <= c.LatencyBuckets[i-1] {
			bad("latency_buckets", "must be strictly increasing")
		}
	}
	f := c.NativeHistogramBucketFactor
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || (f > 0 && f <= 1) {
		bad("native_histogram_bucket_factor", "must be 0 (off) or > 1")
	}
	if c.NativeHistogramMaxBuckets < 0 {
		bad("native_histogram_max_buckets", "must be >= 0")
	}
	return errors.Join(errs...)
}
