package anomaly

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"time"
)

// Config is the `anomaly` section of the tenantguard config.
type Config struct {
	// EvalInterval is how often closed windows are evaluated. Default 10s.
	EvalInterval time.Duration `mapstructure:"eval_interval"`
	// Lateness is how long a 1-minute window stays open for late events
	// after it ends; at most 50s. Default 10s.
	Lateness time.Duration `mapstructure:"lateness"`
	// MinVolume is the tenant's typical (deseasonalized) rate, in events
	// per hour, below which it is never alerted on (usage, cost,
	// error_rate). A tenant above it alerts in its quiet hours too, on the
	// window long enough for the test. Default 30 (0.5 events/min).
	MinVolume float64 `mapstructure:"min_volume"`
	// KWindows is how many 1-minute windows in a row must be anomalous
	// (each at least 1.66x with evidence of its own) before an alert fires,
	// once the CUSUM is over significance. Default 2.
	KWindows int `mapstructure:"k_windows"`
	// QuietPeriod is how long the condition must stay clear before an
	// alert resolves, judged on windows of the episode's scale: on 1-minute
	// windows a run of windows below the resolve ratio as a whole, on 5,
	// 15 or 60 minutes every minute's window below it. An episode resolves
	// about quiet_period + 1 minute after the rate is back, or + 0.5-0.9 of
	// a window on a long scale. Default 5m.
	QuietPeriod time.Duration `mapstructure:"quiet_period"`
	// Cooldown is how long after a resolve no new episode may start on the
	// same series. Default 10m.
	Cooldown time.Duration `mapstructure:"cooldown"`
	// Significance is the CUSUM threshold h of the 1-minute windows, a
	// log-likelihood ratio: higher means fewer false alerts and later
	// detection. Default 13.5.
	Significance float64 `mapstructure:"significance"`
	// RatioFraction sets the ratio test: a window is anomalous only when
	// observed/baseline >= factor*ratio_fraction (2.1 for the default 3x).
	// Default 0.7.
	RatioFraction float64 `mapstructure:"ratio_fraction"`
	// ResolveRatio: while firing, a window is quiet when its own
	// observed/baseline is below 1 + (factor*ratio_fraction-1)*resolve_ratio
	// (1.55 for 3x). Default 0.5.
	ResolveRatio float64 `mapstructure:"resolve_ratio"`
	// MaxEpisode: an episode firing this long is taken as the new normal:
	// it resolves and the baseline adopts the current level. Default 12h.
	MaxEpisode time.Duration `mapstructure:"max_episode"`
	// WarmupWindows is how many windows a series learns before it may
	// alert. Default 60.
	WarmupWindows int `mapstructure:"warmup_windows"`
	// BaselineHalfLife is the half-life of the level EWMA. Default 1h.
	BaselineHalfLife time.Duration `mapstructure:"baseline_half_life"`
	// FastPath fires usage and cost spikes from a single window, including
	// the open one, when the evidence is overwhelming.
	FastPath FastPathConfig `mapstructure:"fast_path"`
	// Scales tests usage and cost over the last 5, 15 and 60 minutes as
	// well as per minute, so that small tenants alert too.
	Scales ScalesConfig `mapstructure:"scales"`

	Usage     MetricConfig  `mapstructure:"usage"`      // factor 3
	Cost      MetricConfig  `mapstructure:"cost"`       // factor 3
	ErrorRate ErrorConfig   `mapstructure:"error_rate"` // factor 3
	Latency   LatencyConfig `mapstructure:"latency"`    // factor 2

	// QuantityKinds are kinds whose usage is measured by quantity (tokens,
	// seconds, bytes) rather than event count. Default ai_tokens,
	// compute_seconds, storage_bytes.
	QuantityKinds []string `mapstructure:"quantity_kinds"`
	// MaxKinds bounds the kinds tracked per tenant. Default 8.
	MaxKinds int `mapstructure:"max_kinds"`
	// MaxIntegrations bounds the integrations tracked per tenant. Default 4.
	MaxIntegrations int `mapstructure:"max_integrations"`
	// TopUsers is how many of each tenant's heaviest users (the events'
	// user_id) the detector tracks per window, so a usage alert can name
	// the user behind a spike; 0 turns it off. Memory: about 640 bytes per
	// tenant at 10, plus the ids. Default 10.
	TopUsers int `mapstructure:"top_users"`
	// IdleEvict drops a tenant's state after this long without events.
	// Default 192h (8 days).
	IdleEvict time.Duration `mapstructure:"idle_evict"`

	// Plans holds per-plan factor overrides, keyed by plan name. Default empty.
	Plans map[string]PlanOverride `mapstructure:"plans"`
	// SpendCaps is the monthly spend cap per plan, in price-book currency.
	// The lead wires it from pricing.plans.<name>.spend_cap. Default empty
	// (no caps).
	SpendCaps map[string]float64 `mapstructure:"spend_caps"`
	// SpendThresholds are the fractions of the cap that alert. The last one
	// (1.0) also marks the tenant for graceful degradation. Default
	// 0.7, 0.9, 1.0.
	SpendThresholds []float64 `mapstructure:"spend_thresholds"`

	// WarmStart controls loading baselines from ClickHouse usage_1m.
	WarmStart WarmStartConfig `mapstructure:"warm_start"`
}

// MetricConfig holds the factor of one metric.
type MetricConfig struct {
	// Factor is the size of spike the detector is designed for. Default
	// 3 (usage, cost).
	Factor float64 `mapstructure:"factor"`
}

// ErrorConfig configures the error-rate detector.
type ErrorConfig struct {
	// Factor: see MetricConfig. Default 3.
	Factor float64 `mapstructure:"factor"`
	// MinRate is the smallest error ratio that may alert. Default 0.05.
	MinRate float64 `mapstructure:"min_rate"`
	// BaseFloor is the smallest baseline error ratio used. Default 0.005.
	BaseFloor float64 `mapstructure:"base_floor"`
}

// LatencyConfig configures the P95 latency detector.
type LatencyConfig struct {
	// Factor: P95 at factor x baseline is a regression. Default 2.
	Factor float64 `mapstructure:"factor"`
	// MinSamples per window for the window to count. Default 50.
	MinSamples int `mapstructure:"min_samples"`
	// RatioFraction: a window is anomalous at P95 >= factor*ratio_fraction
	// times baseline (1.6 for 2x). Default 0.8.
	RatioFraction float64 `mapstructure:"ratio_fraction"`
	// Z is the minimum log-ratio in units of the learned window-to-window
	// spread. Default 3.5.
	Z float64 `mapstructure:"z"`
	// KWindows overrides k_windows for latency; 0 uses k_windows.
	// Default 3.
	KWindows int `mapstructure:"k_windows"`
}

// PlanOverride overrides factors for tenants on one plan; zero keeps the
// global value.
type PlanOverride struct {
	UsageFactor   float64 `mapstructure:"usage_factor"`
	CostFactor    float64 `mapstructure:"cost_factor"`
	ErrorFactor   float64 `mapstructure:"error_factor"`
	LatencyFactor float64 `mapstructure:"latency_factor"`
	MinVolume     float64 `mapstructure:"min_volume"`
}

// FastPathConfig controls the fast path for usage and cost spikes: every
// evaluation also looks at the open (still filling) 1-minute window once
// min_elapsed of it has passed, extrapolates its rate, and fires at once
// when that single window passes the ratio test (factor*ratio_fraction)
// and a far stricter significance than the k-window path. A closed window
// gets the same single-window test. Everything else (k windows, CUSUM,
// hysteresis) is unchanged.
type FastPathConfig struct {
	// Enabled turns the fast path on. Default true.
	Enabled bool `mapstructure:"enabled"`
	// MinElapsed is how much of the open window must have passed before it
	// is evaluated; at most 60s. Default 20s.
	MinElapsed time.Duration `mapstructure:"min_elapsed"`
	// Significance is the single-window threshold in the same
	// quasi-log-likelihood units as significance; it must be at least
	// significance. Default 32.
	Significance float64 `mapstructure:"significance"`
}

// ScalesConfig controls the long windows of usage and cost: each series
// is also tested over the last 5, 15 and 60 minutes (built from its
// 1-minute values), with the same dispersion-aware test as the 1-minute
// scale, each window on its own. A window is tested only when it holds
// enough events to show a spike at the design factor; an episode carries
// the scale it fired on (label "scale") and resolves on windows of that
// scale.
type ScalesConfig struct {
	// Enabled turns the long windows on. Default true.
	Enabled bool `mapstructure:"enabled"`
	// Significance is the threshold of one long window, in the units of
	// significance. Default 13.5.
	Significance float64 `mapstructure:"significance"`
}

// WarmStartConfig controls the warm start from ClickHouse.
type WarmStartConfig struct {
	// Enabled loads baselines at start when a ClickHouse store is wired.
	// Default true.
	Enabled bool `mapstructure:"enabled"`
	// History is how far back the seasonal profile is loaded; at most
	// 8760h (365 days). Default 504h (3 weeks).
	History time.Duration `mapstructure:"history"`
	// Recent is how many hours of minute windows are replayed to warm the
	// levels and dispersion. Default 3h.
	Recent time.Duration `mapstructure:"recent"`
}

// DefaultConfig returns the defaults documented on each field.
func DefaultConfig() Config {
	return Config{
		EvalInterval:     10 * time.Second,
		Lateness:         10 * time.Second,
		MinVolume:        30,
		KWindows:         2,
		QuietPeriod:      5 * time.Minute,
		Cooldown:         10 * time.Minute,
		Significance:     13.5,
		RatioFraction:    0.7,
		ResolveRatio:     0.5,
		MaxEpisode:       12 * time.Hour,
		WarmupWindows:    60,
		BaselineHalfLife: time.Hour,
		FastPath:         FastPathConfig{Enabled: true, MinElapsed: 20 * time.Second, Significance: 32},
		Scales:           ScalesConfig{Enabled: true, Significance: 13.5},
		Usage:            MetricConfig{Factor: 3},
		Cost:             MetricConfig{Factor: 3},
		ErrorRate:        ErrorConfig{Factor: 3, MinRate: 0.05, BaseFloor: 0.005},
		Latency:          LatencyConfig{Factor: 2, MinSamples: 50, RatioFraction: 0.8, Z: 3.5, KWindows: 3},
		QuantityKinds:    []string{"ai_tokens", "compute_seconds", "storage_bytes"},
		MaxKinds:         8,
		MaxIntegrations:  4,
		TopUsers:         10,
		IdleEvict:        192 * time.Hour,
		SpendThresholds:  []float64{0.7, 0.9, 1.0},
		WarmStart:        WarmStartConfig{Enabled: true, History: 504 * time.Hour, Recent: 3 * time.Hour},
	}
}

// Validate reports every bad field, each prefixed with its path.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, msg string) { errs = append(errs, fmt.Errorf("anomaly.%s: %s", field, msg)) }
	pos := func(field string, v float64) {
		if !(v > 0) || math.IsInf(v, 0) {
			bad(field, "must be > 0")
		}
	}
	if c.EvalInterval <= 0 || c.EvalInterval > 10*time.Minute {
		bad("eval_interval", "must be > 0 and at most 10m")
	}
	if c.Lateness < 0 || c.Lateness > 50*time.Second {
		bad("lateness", "must be between 0s and 50s")
	}
	if c.MinVolume < 0 || math.IsNaN(c.MinVolume) || math.IsInf(c.MinVolume, 0) {
		bad("min_volume", "must be >= 0")
	}
	if c.KWindows < 1 || c.KWindows > 60 {
		bad("k_windows", "must be between 1 and 60")
	}
	if c.QuietPeriod < time.Minute || c.QuietPeriod > 4*time.Hour {
		bad("quiet_period", "must be between 1m and 4h")
	}
	if c.Cooldown < 0 || c.Cooldown > 4*time.Hour {
		bad("cooldown", "must be between 0s and 4h")
	}
	pos("significance", c.Significance)
	if !(c.RatioFraction > 0 && c.RatioFraction <= 1) {
		bad("ratio_fraction", "must be in (0, 1]")
	}
	if !(c.ResolveRatio > 0 && c.ResolveRatio <= 1) {
		bad("resolve_ratio", "must be in (0, 1]")
	}
	if c.MaxEpisode < c.QuietPeriod || c.MaxEpisode > 8760*time.Hour {
		bad("max_episode", "must be >= quiet_period and at most 8760h")
	}
	if c.WarmupWindows < 1 || c.WarmupWindows > 10000 {
		bad("warmup_windows", "must be between 1 and 10000")
	}
	if c.BaselineHalfLife < time.Minute {
		bad("baseline_half_life", "must be >= 1m")
	}
	if c.FastPath.MinElapsed < time.Second || c.FastPath.MinElapsed > time.Minute {
		bad("fast_path.min_elapsed", "must be between 1s and 60s")
	}
	if !(c.FastPath.Significance >= c.Significance) || math.IsInf(c.FastPath.Significance, 0) {
		bad("fast_path.significance", "must be >= significance")
	}
	pos("scales.significance", c.Scales.Significance)
	factorOK := func(field string, f float64) {
		if !(f > 1) || math.IsInf(f, 0) {
			bad(field, "must be > 1")
		} else if f*c.RatioFraction <= 1 && field != "latency.factor" {
			bad(field, "factor*ratio_fraction must be > 1")
		}
	}
	factorOK("usage.factor", c.Usage.Factor)
	factorOK("cost.factor", c.Cost.Factor)
	factorOK("error_rate.factor", c.ErrorRate.Factor)
	factorOK("latency.factor", c.Latency.Factor)
	if !(c.ErrorRate.MinRate >= 0 && c.ErrorRate.MinRate <= 1) {
		bad("error_rate.min_rate", "must be in [0, 1]")
	}
	if !(c.ErrorRate.BaseFloor > 0 && c.ErrorRate.BaseFloor < 1) {
		bad("error_rate.base_floor", "must be in (0, 1)")
	}
	if c.Latency.MinSamples < 1 {
		bad("latency.min_samples", "must be >= 1")
	}
	if !(c.Latency.RatioFraction > 0 && c.Latency.RatioFraction <= 1) || c.Latency.Factor*c.Latency.RatioFraction <= 1 {
		bad("latency.ratio_fraction", "must be in (0, 1] with factor*ratio_fraction > 1")
	}
	if c.Latency.Z < 0 {
		bad("latency.z", "must be >= 0")
	}
	if c.Latency.KWindows < 0 || c.Latency.KWindows > 60 {
		bad("latency.k_windows", "must be between 0 and 60")
	}
	if c.MaxKinds < 1 || c.MaxKinds > 64 {
		bad("max_kinds", "must be between 1 and 64")
	}
	if c.MaxIntegrations < 0 || c.MaxIntegrations > 64 {
		bad("max_integrations", "must be between 0 and 64")
	}
	if c.TopUsers < 0 || c.TopUsers > 1000 {
		bad("top_users", "must be between 0 and 1000")
	}
	if c.IdleEvict < time.Hour || c.IdleEvict > 8760*time.Hour {
		bad("idle_evict", "must be between 1h and 8760h")
	}
	for _, name := range sortedKeys(c.Plans) {
		p := c.Plans[name]
		for field, f := range map[string]float64{"usage_factor": p.UsageFactor, "cost_factor": p.CostFactor, "error_factor": p.ErrorFactor} {
			if f != 0 && !(f*c.RatioFraction > 1) {
				bad("plans."+name+"."+field, "must be 0 or have factor*ratio_fraction > 1")
			}
		}
		if p.LatencyFactor != 0 && !(p.LatencyFactor*c.Latency.RatioFraction > 1) {
			bad("plans."+name+".latency_factor", "must be 0 or have factor*latency.ratio_fraction > 1")
		}
		if p.MinVolume < 0 {
			bad("plans."+name+".min_volume", "must be >= 0")
		}
	}
	for _, name := range sortedKeys(c.SpendCaps) {
		if v := c.SpendCaps[name]; !(v > 0) || math.IsInf(v, 0) {
			bad("spend_caps."+name, "must be > 0")
		}
	}
	if len(c.SpendThresholds) == 0 || len(c.SpendThresholds) > 8 {
		bad("spend_thresholds", "must have 1 to 8 entries")
	} else {
		for i, v := range c.SpendThresholds {
			if !(v > 0) || math.IsInf(v, 0) || (i > 0 && v <= c.SpendThresholds[i-1]) {
				bad("spend_thresholds", "must be > 0 and strictly increasing")
				break
			}
		}
	}
	if c.WarmStart.History < 0 || c.WarmStart.History > 8760*time.Hour {
		bad("warm_start.history", "must be between 0 and 8760h (365 days)")
	}
	if c.WarmStart.Recent < 0 || c.WarmStart.Recent > 48*time.Hour {
		bad("warm_start.recent", "must be between 0 and 48h")
	}
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
