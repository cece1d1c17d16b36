package limiter

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tenantguard/tenantguard/collector/event"
)

// Action is what a decision does.
type Action string

// Actions of the decision contract.
const (
	ActionThrottle    Action = "throttle"     // limit to rate_per_sec with burst
	ActionShed        Action = "shed"         // reject everything in scope
	ActionOpenCircuit Action = "open_circuit" // force the scope's circuit open
	ActionClear       Action = "clear"        // remove the decision for the scope
)

// Source says who issued a decision.
type Source string

// Sources of the decision contract. Manual decisions outrank the others
// until they expire; see Publisher.Put.
const (
	SourceAnomaly  Source = "anomaly"
	SourceSpendCap Source = "spend_cap"
	SourceManual   Source = "manual"
)

// Mode says whether limiters enforce a decision or only count what it
// would have rejected.
type Mode string

// Modes of the decision contract. The empty mode is enforce: an enforced
// decision omits the field, so limiters that predate it still read it.
const (
	ModeEnforce Mode = "enforce"
	ModeShadow  Mode = "shadow"
)

// Scope prefixes. A scope is "all", "route:<route>", "integration:<name>"
// or "user:<id>".
const (
	ScopeAll         = "all"
	ScopeRoutePrefix = "route:"
	ScopeIntegPrefix = "integration:"
	ScopeUserPrefix  = "user:"
	keyRouteToken    = ".route."
	keyIntegToken    = ".integration."
	keyUserToken     = ".user."
	maxScopeNameLen  = 256
	maxReasonLen     = 1024
	maxAnomalyIDLen  = 128
	MaxDecisionSize  = 8 << 10 // bytes of one encoded decision
)

// Errors returned by decision parsing.
var (
	ErrInvalidDecision = errors.New("invalid decision")
	ErrInvalidKey      = errors.New("invalid decision key")
)

// Decision is one throttle, shed, circuit or clear order for a tenant, as
// stored (JSON) under its key in the KV bucket tenantguard_decisions.
type Decision struct {
	TenantID   string    `json:"tenant_id"`
	Scope      string    `json:"scope"`
	Action     Action    `json:"action"`
	RatePerSec float64   `json:"rate_per_sec"` // cluster-wide; split across live instances
	Burst      uint32    `json:"burst"`        // cluster-wide; 0 means max(1, ceil(rate))
	IssuedAt   time.Time `json:"issued_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	Reason     string    `json:"reason"`
	Source     Source    `json:"source"`
	AnomalyID  string    `json:"anomaly_id"`
	// KeyID and Sig are the writer's signature (see CanonicalBytes and
	// Signer); an unsigned decision has neither, and older readers ignore
	// both.
	KeyID string `json:"key_id,omitempty"`
	Sig   string `json:"sig,omitempty"`
	// Mode is "shadow" for a decision that limiters only count (see
	// Shadow), "enforce" or empty (absent) for one they enforce. A limiter
	// that predates the field rejects a decision carrying it as malformed,
	// so it never enforces a shadow decision.
	Mode Mode `json:"mode,omitempty"`
}

// Shadow reports whether d is a shadow decision: limiters allow what it
// would reject and count it.
func (d Decision) Shadow() bool { return d.Mode == ModeShadow }

// MinTimestamp and MaxTimestamp bound issued_at and expires_at: what a
// ClickHouse DateTime (UInt32 seconds) holds, so the audit table records
// the times a limiter acts on, never a wrapped date.
var (
	MinTimestamp = time.Unix(0, 0).UTC()
	MaxTimestamp = time.Unix(math.MaxUint32, 0).UTC() // 2106-02-07T06:28:15Z
)

// RouteScope returns the scope "route:<route>".
func RouteScope(route string) string { return ScopeRoutePrefix + route }

// IntegrationScope returns the scope "integration:<name>".
func IntegrationScope(name string) string { return ScopeIntegPrefix + name }

// UserScope returns the scope "user:<id>".
func UserScope(id string) string { return ScopeUserPrefix + id }

// Live reports whether d is in force at now.
func (d Decision) Live(now time.Time) bool { return now.Before(d.ExpiresAt) }

// EffectiveBurst is Burst, or max(1, ceil(RatePerSec)) when Burst is 0.
func (d Decision) EffectiveBurst() int {
	if d.Burst > 0 {
		return int(d.Burst)
	}
	return max(1, int(math.Ceil(d.RatePerSec)))
}

// Key returns the KV key of d: see Key.
func (d Decision) Key() (string, error) { return Key(d.TenantID, d.Scope) }

// Validate checks every field and returns all problems joined, each
// prefixed with its JSON field name.
func (d Decision) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	if !event.ValidTenantID(d.TenantID) {
		bad("tenant_id", "%q must match %s", d.TenantID, event.TenantPattern)
	}
	if err := validScope(d.Scope); err != nil {
		bad("scope", "%v", err)
	}
	switch d.Action {
	case ActionThrottle, ActionShed, ActionClear:
	case ActionOpenCircuit:
		if !strings.HasPrefix(d.Scope, ScopeIntegPrefix) && d.Scope != ScopeAll {
			bad("scope", "open_circuit needs scope integration:<name> or all, got %q", d.Scope)
		}
	default:
		bad("action", "%q must be throttle, shed, open_circuit or clear", d.Action)
	}
	if math.IsNaN(d.RatePerSec) || math.IsInf(d.RatePerSec, 0) || d.RatePerSec < 0 {
		bad("rate_per_sec", "must be finite and >= 0, got %v", d.RatePerSec)
	}
	if d.IssuedAt.IsZero() {
		bad("issued_at", "must be set")
	} else if err := checkTimestamp(d.IssuedAt); err != nil {
		bad("issued_at", "%v", err)
	}
	if d.ExpiresAt.IsZero() {
		bad("expires_at", "must be set: every decision expires")
	} else if err := checkTimestamp(d.ExpiresAt); err != nil {
		bad("expires_at", "%v", err)
	} else if !d.IssuedAt.IsZero() && !d.ExpiresAt.After(d.IssuedAt) {
		bad("expires_at", "must be after issued_at")
	}
	switch d.Source {
	case SourceAnomaly, SourceSpendCap, SourceManual:
	default:
		bad("source", "%q must be anomaly, spend_cap or manual", d.Source)
	}
	if len(d.Reason) > maxReasonLen || !utf8.ValidString(d.Reason) {
		bad("reason", "must be valid UTF-8 of at most %d bytes", maxReasonLen)
	} else if err := CheckText(d.Reason); err != nil {
		bad("reason", "%v", err)
	}
	switch d.Mode {
	case "", ModeEnforce, ModeShadow:
	default:
		bad("mode", "%q must be shadow or enforce (absent means enforce)", d.Mode)
	}
	if len(d.AnomalyID) > maxAnomalyIDLen || !utf8.ValidString(d.AnomalyID) {
		bad("anomaly_id", "must be valid UTF-8 of at most %d bytes", maxAnomalyIDLen)
	} else if err := CheckText(d.AnomalyID); err != nil {
		bad("anomaly_id", "%v", err)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrInvalidDecision, errors.Join(errs...))
}

// checkTimestamp refuses a time outside MinTimestamp..MaxTimestamp.
func checkTimestamp(t time.Time) error {
	if t.Before(MinTimestamp) || t.After(MaxTimestamp) {
		return fmt.Errorf("%s is outside %s..%s, the range a ClickHouse DateTime holds",
			t.UTC().Format(time.RFC3339), MinTimestamp.Format(time.RFC3339), MaxTimestamp.Format(time.RFC3339))
	}
	return nil
}

// CheckText refuses a control character (unicode.IsControl: C0, DEL, C1,
// so also the ESC of ANSI escape sequences) in a free-text field, naming
// the first one and its byte offset.
func CheckText(s string) error {
	for i, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("control character %U at byte %d: control characters (such as newlines and ANSI escapes) are refused", r, i)
		}
	}
	return nil
}

// validScope checks "all", "route:<r>", "integration:<n>" or "user:<id>"
// where the name is 1..256 bytes of printable UTF-8.
func validScope(s string) error {
	if s == ScopeAll {
		return nil
	}
	var name string
	switch {
	case strings.HasPrefix(s, ScopeRoutePrefix):
		name = s[len(ScopeRoutePrefix):]
	case strings.HasPrefix(s, ScopeIntegPrefix):
		name = s[len(ScopeIntegPrefix):]
	case strings.HasPrefix(s, ScopeUserPrefix):
		name = s[len(ScopeUserPrefix):]
	default:
		return fmt.Errorf("%q must be all, route:<route>, integration:<name> or user:<id>", s)
	}
	if name == "" || len(name) > maxScopeNameLen || !utf8.ValidString(name) {
		return fmt.Errorf("%q: the name must be 1..%d bytes of UTF-8", s, maxScopeNameLen)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("%q: the name has a control character", s)
		}
	}
	return nil
}

// ValidUserID reports whether id can name a user scope: 1..256 bytes of
// UTF-8 without control characters.
func ValidUserID(id string) bool { return validScope(ScopeUserPrefix+id) == nil }

// Key returns the KV key of a tenant's decision for a scope:
//
//	all                 -> <tenant_id>
//	route:<r>           -> <tenant_id>.route.<base64url(r), no padding>
//	integration:<name>  -> <tenant_id>.integration.<base64url(name), no padding>
//	user:<id>           -> <tenant_id>.user.<base64url(id), no padding>
//
// Routes hold spaces, slashes and colons that are not legal in KV keys, so
// the name is always base64url-encoded (alphabet A-Z a-z 0-9 - _), which is
// KV-key safe and reversible; see ParseKey.
func Key(tenant, scope string) (string, error) {
	if !event.ValidTenantID(tenant) {
		return "", fmt.Errorf("%w: tenant %q must match %s", ErrInvalidKey, tenant, event.TenantPattern)
	}
	if err := validScope(scope); err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidKey, err)
	}
	switch {
	case scope == ScopeAll:
		return tenant, nil
	case strings.HasPrefix(scope, ScopeRoutePrefix):
		return tenant + keyRouteToken + base64.RawURLEncoding.EncodeToString([]byte(scope[len(ScopeRoutePrefix):])), nil
	case strings.HasPrefix(scope, ScopeUserPrefix):
		return tenant + keyUserToken + base64.RawURLEncoding.EncodeToString([]byte(scope[len(ScopeUserPrefix):])), nil
	default:
		return tenant + keyIntegToken + base64.RawURLEncoding.EncodeToString([]byte(scope[len(ScopeIntegPrefix):])), nil
	}
}

// ParseKey reverses Key.
func ParseKey(key string) (tenant, scope string, err error) {
	tenant, rest, hasScope := strings.Cut(key, ".")
	if !event.ValidTenantID(tenant) {
		return "", "", fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	if !hasScope {
		return tenant, ScopeAll, nil
	}
	kind, enc, ok := strings.Cut(rest, ".")
	if !ok {
		return "", "", fmt.Errorf("%w: %q", ErrInvalidKey, key)
	}
	var prefix string
	switch kind {
	case "route":
		prefix = ScopeRoutePrefix
	case "integration":
		prefix = ScopeIntegPrefix
	case "user":
		prefix = ScopeUserPrefix
	default:
		return "", "", fmt.Errorf("%w: %q: unknown scope kind %q", ErrInvalidKey, key, kind)
	}
	name, err := base64.RawURLEncoding.Strict().DecodeString(enc)
	if err != nil {
		return "", "", fmt.Errorf("%w: %q: %v", ErrInvalidKey, key, err)
	}
	scope = prefix + string(name)
	if err := validScope(scope); err != nil {
		return "", "", fmt.Errorf("%w: %q: %w", ErrInvalidKey, key, err)
	}
	return tenant, scope, nil
}

// DecodeDecision parses and validates one JSON decision of at most
// MaxDecisionSize bytes. Unknown fields are rejected. It does not check the
// signature: see Verifier.
func DecodeDecision(data []byte) (Decision, error) {
	d, err := decodeStrict(data)
	if err != nil {
		return Decision{}, err
	}
	if err := d.Validate(); err != nil {
		return Decision{}, err
	}
	return d, nil
}

// decodeStrict parses one JSON decision of at most MaxDecisionSize bytes
// with known fields only, without validating it.
func decodeStrict(data []byte) (Decision, error) {
	var d Decision
	if len(data) > MaxDecisionSize {
		return d, fmt.Errorf("%w: %d bytes exceeds %d", ErrInvalidDecision, len(data), MaxDecisionSize)
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return Decision{}, fmt.Errorf("%w: %v", ErrInvalidDecision, err)
	}
	if dec.More() {
		return Decision{}, fmt.Errorf("%w: trailing data", ErrInvalidDecision)
	}
	return d, nil
}
