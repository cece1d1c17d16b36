package decide

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/limiter"
)

// Config is the decisions section of the daemon config.
type Config struct {
	// ThrottleFactor: a usage spike throttles the tenant to this many times
	// its baseline rate. Default 2.
	ThrottleFactor float64 `mapstructure:"throttle_factor"`
	// BaselineWindow is the window the usage alert's baseline counts events
	// in (the detector's 1-minute windows). Default 1m.
	BaselineWindow time.Duration `mapstructure:"baseline_window"`
	// MinRatePerSec floors every automatic throttle. Default 1.
	MinRatePerSec float64 `mapstructure:"min_rate_per_sec"`
	// BurstSeconds sets the burst of a throttle to rate x this many
	// seconds (at least 1). Default 2, so ordinary bursts of a tenant back at
	// its normal rate are not refused while the decision lasts.
	BurstSeconds float64 `mapstructure:"burst_seconds"`
	// DegradedRatePerSec is the cluster-wide rate of the degraded tier that
	// a 100% spend cap moves a tenant to. Default 5.
	DegradedRatePerSec float64 `mapstructure:"degraded_rate_per_sec"`
	// TTL is how long each decision lives unless renewed. Default 5m.
	TTL time.Duration `mapstructure:"ttl"`
	// RenewEvery is how often a decision is renewed while its alert
	// fires; must be < ttl. Default 1m.
	RenewEvery time.Duration `mapstructure:"renew_every"`
	// SweepEvery is how often expired decisions are deleted from the KV
	// bucket. Default 5m.
	SweepEvery time.Duration `mapstructure:"sweep_every"`
	// QueueSize bounds the alerts waiting for the engine; Send drops and
	// counts alerts beyond it. Default 1024.
	QueueSize int `mapstructure:"queue_size"`
	// KVTimeout bounds each write of a decision to the KV bucket (put or
	// delete), so an unreachable NATS costs the engine this long per call,
	// not forever; a sweep of expired decisions gets 10 times as long.
	// Default 2s.
	KVTimeout time.Duration `mapstructure:"kv_timeout"`
	// AuditQueueSize bounds the decisions waiting to be written to the
	// ClickHouse audit trail; beyond it they are dropped and counted in
	// tenantguard_decisions_audit_dropped_total. Default 4096.
	AuditQueueSize int `mapstructure:"audit_queue_size"`
	// AuditTimeout bounds each insert into the audit trail; a failed insert
	// is retried with backoff. Default 5s.
	AuditTimeout time.Duration `mapstructure:"audit_timeout"`
	// UserShare: a usage spike whose heaviest user (the alert's top_user
	// label) made at least this share of the tenant's events in the window
	// throttles that user (scope user:<id>) instead of the tenant, to the
	// rate that brings the tenant back to throttle_factor x its baseline
	// given its other users' rate. 0 turns it off. Default 0.5.
	UserShare float64 `mapstructure:"user_share"`
	// Mode is how limiters treat the engine's decisions: "enforce", or
	// "shadow" to publish them with "mode":"shadow" so that limiters only
	// count what they would have rejected. Plans and Tenants override it.
	// Default enforce.
	Mode limiter.Mode `mapstructure:"mode"`
	// Plans override the policy per plan (the alert's "plan" label).
	// Default empty.
	Plans map[string]Policy `mapstructure:"plans"`
	// Tenants override the policy per tenant, over its plan's. Default
	// empty.
	Tenants map[string]Policy `mapstructure:"tenants"`
	// SigningKeyFile is the Ed25519 private key (PEM, PKCS #8) that the
	// engine and the CLI (throttle, release) sign every decision with;
	// `tenantguard keygen -o FILE` creates one and prints the public key to
	// give limiters. Default empty: the user's default key,
	// $XDG_CONFIG_HOME/tenantguard/decisions.key, made on first use.
	SigningKeyFile string `mapstructure:"signing_key_file"`
	// TrustedKeys are further public keys ("ed25519:<base64>") whose
	// decisions verify besides the signing key's own, e.g. the operators'
	// CLI key when it differs from the daemon's: only a verified manual
	// decision outranks the engine, and the audit table marks decisions
	// verified against these. Default empty.
	TrustedKeys []string `mapstructure:"trusted_keys"`
	// MaxManualTTL caps how long a manual decision lasts (throttle --for).
	// Default 168h.
	MaxManualTTL time.Duration `mapstructure:"max_manual_ttl"`
	// MaxAutoTTL caps how long an automatic decision lasts; ttl must not
	// exceed it. Default 1h.
	MaxAutoTTL time.Duration `mapstructure:"max_auto_ttl"`
}

// Policy overrides the top-level policy for one plan. Zero fields inherit.
type Policy struct {
	// ThrottleFactor: see Config.ThrottleFactor. Default 0 (inherit).
	ThrottleFactor float64 `mapstructure:"throttle_factor"`
	// DegradedRatePerSec: see Config.DegradedRatePerSec. Default 0 (inherit).
	DegradedRatePerSec float64 `mapstructure:"degraded_rate_per_sec"`
	// Disabled turns off automatic decisions for the plan. Default false.
	Disabled bool `mapstructure:"disabled"`
	// Mode: see Config.Mode. Default "" (inherit).
	Mode limiter.Mode `mapstructure:"mode"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		ThrottleFactor:     2,
		BaselineWindow:     time.Minute,
		MinRatePerSec:      1,
		BurstSeconds:       2,
		DegradedRatePerSec: 5,
		TTL:                5 * time.Minute,
		RenewEvery:         time.Minute,
		SweepEvery:         5 * time.Minute,
		QueueSize:          1024,
		KVTimeout:          2 * time.Second,
		AuditQueueSize:     4096,
		AuditTimeout:       5 * time.Second,
		MaxManualTTL:       limiter.DefaultMaxManualTTL,
		MaxAutoTTL:         limiter.DefaultMaxAutomaticTTL,
		Mode:               limiter.ModeEnforce,
		UserShare:          0.5,
	}
}

// validMode reports whether m is a mode a config may name; empty inherits
// when inherit is set.
func validMode(m limiter.Mode, inherit bool) bool {
	return m == limiter.ModeEnforce || m == limiter.ModeShadow || (inherit && m == "")
}

// ModeFor returns the mode of the engine's decisions for tenant on plan:
// the tenant's override, else the plan's, else Mode.
func (c Config) ModeFor(tenant, plan string) limiter.Mode {
	if m := c.Tenants[tenant].Mode; m != "" {
		return m
	}
	if m := c.Plans[plan].Mode; m != "" {
		return m
	}
	if c.Mode == "" {
		return limiter.ModeEnforce
	}
	return c.Mode
}

// Validate returns every bad field, prefixed decisions.<field>.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, msg string) { errs = append(errs, fmt.Errorf("decisions.%s: %s", field, msg)) }
	pos := func(f float64) bool { return f > 0 && !math.IsInf(f, 0) }
	if !pos(c.ThrottleFactor) {
		bad("throttle_factor", "must be > 0")
	}
	if c.BaselineWindow <= 0 {
		bad("baseline_window", "must be > 0")
	}
	if !pos(c.MinRatePerSec) {
		bad("min_rate_per_sec", "must be > 0")
	}
	if !pos(c.BurstSeconds) {
		bad("burst_seconds", "must be > 0")
	}
	if !pos(c.DegradedRatePerSec) {
		bad("degraded_rate_per_sec", "must be > 0")
	}
	if c.TTL <= 0 {
		bad("ttl", "must be > 0")
	} else if c.MaxAutoTTL > 0 && c.TTL > c.MaxAutoTTL {
		bad("ttl", fmt.Sprintf("%s must be <= max_auto_ttl (%s)", c.TTL, c.MaxAutoTTL))
	}
	if c.RenewEvery <= 0 || c.RenewEvery >= c.TTL {
		bad("renew_every", "must be > 0 and < ttl")
	}
	if c.SweepEvery <= 0 {
		bad("sweep_every", "must be > 0")
	}
	if c.QueueSize <= 0 {
		bad("queue_size", "must be > 0")
	}
	if c.KVTimeout <= 0 {
		bad("kv_timeout", "must be > 0")
	}
	if c.AuditQueueSize <= 0 {
		bad("audit_queue_size", "must be > 0")
	}
	if c.AuditTimeout <= 0 {
		bad("audit_timeout", "must be > 0")
	}
	if c.MaxManualTTL <= 0 {
		bad("max_manual_ttl", "must be > 0")
	}
	if c.MaxAutoTTL <= 0 {
		bad("max_auto_ttl", "must be > 0")
	}
	if _, err := limiter.ParsePublicKeys("decisions.trusted_keys", c.TrustedKeys); err != nil {
		errs = append(errs, err)
	}
	if !(c.UserShare >= 0 && c.UserShare <= 1) {
		bad("user_share", "must be between 0 and 1 (0 turns it off)")
	}
	if !validMode(c.Mode, false) {
		bad("mode", fmt.Sprintf("%q must be enforce or shadow", c.Mode))
	}
	for _, section := range []struct {
		name     string
		policies map[string]Policy
	}{{"plans", c.Plans}, {"tenants", c.Tenants}} {
		for name, p := range section.policies {
			prefix := section.name + "." + name + "."
			if section.name == "tenants" && !event.ValidTenantID(name) {
				bad(section.name+"."+name, fmt.Sprintf("tenant id must match %s", event.TenantPattern))
			}
			if p.ThrottleFactor < 0 || math.IsNaN(p.ThrottleFactor) || math.IsInf(p.ThrottleFactor, 0) {
				bad(prefix+"throttle_factor", "must be >= 0 (0 inherits)")
			}
			if p.DegradedRatePerSec < 0 || math.IsNaN(p.DegradedRatePerSec) || math.IsInf(p.DegradedRatePerSec, 0) {
				bad(prefix+"degraded_rate_per_sec", "must be >= 0 (0 inherits)")
			}
			if !validMode(p.Mode, true) {
				bad(prefix+"mode", fmt.Sprintf("%q must be enforce or shadow (empty inherits)", p.Mode))
			}
		}
	}
	return errors.Join(errs...)
}
