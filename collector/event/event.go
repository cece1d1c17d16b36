package event

import (
	"regexp"
	"time"
)

// Built-in kinds. Further kinds may be declared in config; see Rules.Custom.
const (
	KindAPIRequest     = "api_request"
	KindDBQuery        = "db_query"
	KindAITokens       = "ai_tokens"
	KindStorageBytes   = "storage_bytes"
	KindComputeSeconds = "compute_seconds"
	KindJobRun         = "job_run"
	KindWebhookCall    = "webhook_call"
)

// BuiltinKinds lists the kinds every deployment accepts.
var BuiltinKinds = []string{
	KindAPIRequest, KindDBQuery, KindAITokens, KindStorageBytes,
	KindComputeSeconds, KindJobRun, KindWebhookCall,
}

// Limits of wire format v1.
const (
	MaxSize         = 8 << 10 // bytes in one encoded event
	MaxIDLen        = 128
	MaxAttrs        = 16
	MaxFuture       = 5 * time.Minute
	DefaultLateness = 7 * 24 * time.Hour

	// MaxQuantity is the largest quantity: 2^53-1, the largest integer a
	// float64 holds exactly. Bounded quantities keep every sum finite, in
	// ClickHouse and in Prometheus counters alike.
	MaxQuantity = 1<<53 - 1
	// MaxLatencyMs is the largest latency_ms, 1e9 ms (about 11.6 days). The
	// per-minute rollup keeps latencies as Float32, whose range it stays
	// far inside.
	MaxLatencyMs = 1e9
)

var (
	tenantRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
	kindRE   = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)
)

// Event is one usage event, wire format v1.
type Event struct {
	ID         string            `json:"id"`
	TenantID   string            `json:"tenant_id"`
	Kind       string            `json:"kind"`
	Time       time.Time         `json:"time"`
	Quantity   float64           `json:"quantity"`
	Service    string            `json:"service,omitempty"`
	Route      string            `json:"route,omitempty"`
	UserID     string            `json:"user_id,omitempty"`
	LatencyMs  float64           `json:"latency_ms,omitempty"`
	StatusCode int               `json:"status_code,omitempty"`
	Error      bool              `json:"error,omitempty"`
	Attrs      map[string]string `json:"attrs,omitempty"`
}

// ValidTenantID reports whether id is a legal tenant id: a subject token
// and KV key, so it never contains dots, spaces or wildcards.
func ValidTenantID(id string) bool {
	// A hand-rolled check is ~20x faster than the regexp on the hot path.
	if len(id) == 0 || len(id) > 64 || !alnum(id[0]) {
		return false
	}
	for i := 1; i < len(id); i++ {
		c := id[i]
		if !alnum(c) && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// ValidKindName reports whether k has the shape of a kind name.
func ValidKindName(k string) bool {
	if len(k) == 0 || len(k) > 32 || k[0] < 'a' || k[0] > 'z' {
		return false
	}
	for i := 1; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') && c != '_' {
			return false
		}
	}
	return true
}

func alnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// TenantPattern and KindPattern are the regular expressions of the contract,
// exported for docs and the JSON Schema test.
var (
	TenantPattern = tenantRE.String()
	KindPattern   = kindRE.String()
)
