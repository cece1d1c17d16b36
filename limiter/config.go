package limiter

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
)

// Config configures a Limiter. Zero values are not defaults: start from
// DefaultConfig.
type Config struct {
	// Group names the set of instances that split a global rate between
	// them: the instances of one service. Services must not share a group,
	// or each one's limits are split with the other's instances. Default
	// empty, which New replaces with the program's name (see GroupOf).
	Group string `mapstructure:"group"`
	// InstanceID identifies this instance in the presence bucket. Default:
	// empty, which means a random id.
	InstanceID string `mapstructure:"instance_id"`
	// DefaultRatePerSec is the cluster-wide rate for tenants without a
	// decision and without a plan default. Default 0: unlimited.
	DefaultRatePerSec float64 `mapstructure:"default_rate_per_sec"`
	// DefaultBurst is the cluster-wide burst that goes with
	// DefaultRatePerSec. Default 0: max(1, ceil(rate)).
	DefaultBurst int `mapstructure:"default_burst"`
	// Plans are cluster-wide default limits per plan, for tenants without a
	// decision; Deps.PlanOf maps a tenant to its plan. Default empty.
	Plans map[string]PlanLimit `mapstructure:"plans"`
	// MaxDefaultTenants caps how many tenants get their own default-limit
	// bucket; further tenants share one. Default 100000.
	MaxDefaultTenants int `mapstructure:"max_default_tenants"`
	// SplitGlobal divides every rate and burst by the number of live
	// instances of the Group. Default true.
	SplitGlobal bool `mapstructure:"split_global"`
	// HeartbeatInterval is how often the presence key is refreshed.
	// Default 400ms.
	HeartbeatInterval time.Duration `mapstructure:"heartbeat_interval"`
	// PresenceTTL is how long a silent instance still counts as live; also
	// the presence bucket's max age when this instance creates it. Default 1.2s.
	PresenceTTL time.Duration `mapstructure:"presence_ttl"`
	// RewatchBackoff is the pause before the KV watch is re-created after a
	// failure. Default 250ms.
	RewatchBackoff time.Duration `mapstructure:"rewatch_backoff"`
	// MaxTenantSeries caps the tenants with their own metrics label; the
	// others are summed under tenant="__overflow__". Default 100.
	MaxTenantSeries int `mapstructure:"max_tenant_series"`
	// TrustedKeys are the public keys ("ed25519:<base64>", as `tenantguard
	// keygen` prints them) whose signatures this limiter accepts on
	// decisions from the KV bucket: the daemon's and the operators' CLI
	// key. A limiter with a NATS connection and no trusted key refuses to
	// start unless InsecureAcceptUnsigned is set. Default empty.
	TrustedKeys []string `mapstructure:"trusted_keys"`
	// InsecureAcceptUnsigned applies decisions without a signature, and
	// deletes of live decisions, as limiters before signing did: anyone who
	// can write to the bucket can then throttle, shed or release any
	// tenant. Signed decisions are still verified when TrustedKeys is set.
	// For local development and for rolling out signing only. Default false.
	InsecureAcceptUnsigned bool `mapstructure:"insecure_accept_unsigned"`
	// MaxDecisionTTL rejects a decision that expires more than this after
	// its issued_at, or after now (plus 5 minutes of clock skew). Keep it
	// at least the writers' caps (decisions.max_manual_ttl and
	// decisions.max_auto_ttl). Default 168h.
	MaxDecisionTTL time.Duration `mapstructure:"max_decision_ttl"`
	// Breaker configures the circuit breakers.
	Breaker BreakerConfig `mapstructure:"breaker"`
}

// Caps on how long a decision may last, the defaults of the writers'
// decisions.max_manual_ttl and decisions.max_auto_ttl.
const (
	DefaultMaxManualTTL    = 7 * 24 * time.Hour
	DefaultMaxAutomaticTTL = time.Hour
)

// PlanLimit is a cluster-wide default limit for the tenants of a plan.
type PlanLimit struct {
	// RatePerSec is the cluster-wide rate; 0 means unlimited. Default 0.
	RatePerSec float64 `mapstructure:"rate_per_sec"`
	// Burst goes with RatePerSec; 0 means max(1, ceil(rate)). Default 0.
	Burst int `mapstructure:"burst"`
	// BurstCredits bank unused capacity for bursts past the limit (for
	// premium plans): a request the tenant's limit (its plan default or a
	// throttle decision) rejects spends a credit instead. Needs
	// Deps.PlanOf. Default none.
	BurstCredits BurstCredits `mapstructure:"burst_credits"`
}

// BreakerConfig configures the per-tenant, per-integration circuit breakers.
type BreakerConfig struct {
	// Window is the rolling window of the error ratio. Default 10s.
	Window time.Duration `mapstructure:"window"`
	// Buckets splits Window into this many buckets. Default 10.
	Buckets int `mapstructure:"buckets"`
	// MinRequests is the minimum number of calls in Window before the error
	// ratio can open the circuit. Default 20.
	MinRequests int `mapstructure:"min_requests"`
	// ErrorRatio opens the circuit when errors/calls in Window reach it.
	// Default 0.5.
	ErrorRatio float64 `mapstructure:"error_ratio"`
	// OpenFor is how long a locally opened circuit stays open before it
	// lets probes through (half-open). Default 5s.
	OpenFor time.Duration `mapstructure:"open_for"`
	// HalfOpenProbes is how many probe calls half-open admits; that many
	// successes close the circuit, one failure re-opens it. Default 3.
	HalfOpenProbes int `mapstructure:"half_open_probes"`
	// MaxBreakers caps the tracked tenant/integration pairs; calls on
	// further pairs are not tracked. Default 100000.
	MaxBreakers int `mapstructure:"max_breakers"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		MaxDefaultTenants: 100000,
		SplitGlobal:       true,
		HeartbeatInterval: 400 * time.Millisecond,
		PresenceTTL:       1200 * time.Millisecond,
		RewatchBackoff:    250 * time.Millisecond,
		MaxTenantSeries:   100,
		MaxDecisionTTL:    DefaultMaxManualTTL,
		Breaker:           DefaultBreakerConfig(),
	}
}

// DefaultBreakerConfig returns the documented breaker defaults.
func DefaultBreakerConfig() BreakerConfig {
	return BreakerConfig{
		Window:         10 * time.Second,
		Buckets:        10,
		MinRequests:    20,
		ErrorRatio:     0.5,
		OpenFor:        5 * time.Second,
		HalfOpenProbes: 3,
		MaxBreakers:    100000,
	}
}

// Validate returns every bad field, named by its Go path (for example
// limiter.Config.Breaker.ErrorRatio): a service sets these in code, not
// through config keys of tenantguard's.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("limiter.Config.%s: "+format, append([]any{field}, args...)...))
	}
	if c.Group != "" && !event.ValidTenantID(c.Group) {
		bad("Group", "%q must match %s", c.Group, event.TenantPattern)
	}
	if c.InstanceID != "" && !event.ValidTenantID(c.InstanceID) {
		bad("InstanceID", "%q must match %s", c.InstanceID, event.TenantPattern)
	}
	if !finiteNonNeg(c.DefaultRatePerSec) {
		bad("DefaultRatePerSec", "must be finite and >= 0")
	}
	if c.DefaultBurst < 0 {
		bad("DefaultBurst", "must be >= 0")
	}
	for name, p := range c.Plans {
		if !finiteNonNeg(p.RatePerSec) {
			bad(fmt.Sprintf("Plans[%q].RatePerSec", name), "must be finite and >= 0")
		}
		if p.Burst < 0 {
			bad(fmt.Sprintf("Plans[%q].Burst", name), "must be >= 0")
		}
		if !finiteNonNeg(p.BurstCredits.AccruePerSec) {
			bad(fmt.Sprintf("Plans[%q].BurstCredits.AccruePerSec", name), "must be finite and >= 0")
		}
		if p.BurstCredits.Max < 0 {
			bad(fmt.Sprintf("Plans[%q].BurstCredits.Max", name), "must be >= 0")
		}
	}
	if c.MaxDefaultTenants <= 0 {
		bad("MaxDefaultTenants", "must be > 0")
	}
	if c.HeartbeatInterval <= 0 {
		bad("HeartbeatInterval", "must be > 0")
	}
	if c.PresenceTTL < 2*c.HeartbeatInterval {
		bad("PresenceTTL", "must be >= 2 x HeartbeatInterval (%s)", 2*c.HeartbeatInterval)
	}
	if c.RewatchBackoff <= 0 {
		bad("RewatchBackoff", "must be > 0")
	}
	if c.MaxTenantSeries < 0 {
		bad("MaxTenantSeries", "must be >= 0")
	}
	if _, err := ParsePublicKeys("limiter.Config.TrustedKeys", c.TrustedKeys); err != nil {
		errs = append(errs, err)
	}
	if c.MaxDecisionTTL <= 0 {
		bad("MaxDecisionTTL", "must be > 0")
	}
	if err := c.Breaker.validate("limiter.Config.Breaker."); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (b BreakerConfig) validate(prefix string) error {
	var errs []error
	bad := func(field, msg string) { errs = append(errs, fmt.Errorf("%s%s: %s", prefix, field, msg)) }
	if b.Window <= 0 {
		bad("Window", "must be > 0")
	}
	if b.Buckets <= 0 || b.Buckets > 600 {
		bad("Buckets", "must be in 1..600")
	}
	if b.MinRequests <= 0 {
		bad("MinRequests", "must be > 0")
	}
	if !(b.ErrorRatio > 0 && b.ErrorRatio <= 1) {
		bad("ErrorRatio", "must be in (0, 1]")
	}
	if b.OpenFor <= 0 {
		bad("OpenFor", "must be > 0")
	}
	if b.HalfOpenProbes <= 0 {
		bad("HalfOpenProbes", "must be > 0")
	}
	if b.MaxBreakers <= 0 {
		bad("MaxBreakers", "must be > 0")
	}
	return errors.Join(errs...)
}

func finiteNonNeg(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) && f >= 0 }
