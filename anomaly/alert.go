package anomaly

import (
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Severity of an alert.
type Severity string

// Severities, lowest first.
const (
	SeverityInfo     Severity = "info"
	SeverityWarning  Severity = "warning"
	SeverityCritical Severity = "critical"
)

// Status of an alert episode.
type Status string

// Alert statuses.
const (
	StatusFiring   Status = "firing"
	StatusResolved Status = "resolved"
)

// Metrics an alert can be about.
const (
	MetricUsage       = "usage"        // event rate or quantity at N x baseline
	MetricLatencyP95  = "latency_p95"  // P95 latency at N x baseline
	MetricErrorRate   = "error_rate"   // error ratio spike, per tenant or integration
	MetricCost        = "cost"         // spend per hour at N x baseline
	MetricSpendCap    = "spend_cap"    // monthly spend reached 70/90/100% of the plan cap
	MetricPGUnscoped  = "pg_unscoped"  // Postgres ran a statement on a tenant table with no tenant filter (Database set)
	MetricHeavyTenant = "heavy_tenant" // a tenant held over advisor.share of a pooled resource for a sustained period
)

// Labels an alert may carry.
const (
	LabelPlan               = "plan"                  // the tenant's plan
	LabelThreshold          = "threshold"             // spend cap: 70, 90 or 100
	LabelTenantEventsPerMin = "tenant_events_per_min" // usage: the tenant's expected events per minute, all kinds
	LabelResource           = "resource"              // heavy_tenant: events, cost, db_query_ms or compute_seconds
	LabelRecommendation     = "recommendation"        // heavy_tenant: move_to_dedicated
	LabelScale              = "scale"                 // detectors: the window length the episode fired and resolves on ("1m", "5m", "15m", "60m")
)

// Alert is one anomaly episode for one tenant, or one finding of the
// Postgres auditor for one database (Database set, TenantID empty). It is
// what every notifier sends, what the anomalies table stores, and what
// replay prints.
type Alert struct {
	Fingerprint string            `json:"fingerprint"`
	TenantID    string            `json:"tenant_id"`
	Database    string            `json:"database,omitempty"` // a Postgres finding's database; TenantID is empty then
	Metric      string            `json:"metric"`
	Kind        string            `json:"kind,omitempty"`        // event kind, when the metric is per kind
	Integration string            `json:"integration,omitempty"` // route or attrs.integration, for error_rate
	Status      Status            `json:"status"`
	Severity    Severity          `json:"severity"`
	Observed    float64           `json:"observed"`
	Baseline    float64           `json:"baseline"`
	Ratio       float64           `json:"ratio"`
	StartsAt    time.Time         `json:"starts_at"`
	EndsAt      time.Time         `json:"ends_at,omitempty"` // zero while firing
	Summary     string            `json:"summary"`
	Labels      map[string]string `json:"labels,omitempty"` // extra labels, e.g. threshold for spend caps
}

// Fingerprint returns a stable id for an episode: the same tenant, metric,
// kind, integration and start time always give the same fingerprint.
func Fingerprint(tenant, metric, kind, integration string, startsAt time.Time) string {
	h := sha256.New()
	for _, s := range []string{tenant, metric, kind, integration, startsAt.UTC().Format(time.RFC3339)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}
