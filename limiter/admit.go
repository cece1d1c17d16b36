package limiter

import (
	"errors"
	"net/http"
	"strconv"
	"time"
)

// Why AdmitHTTP turned a request away.
const (
	DeniedThrottled   = "throttled"    // a throttle decision or a default limit: 429
	DeniedShed        = "shed"         // a shed decision: 429
	DeniedCircuitOpen = "circuit_open" // the integration's circuit is open: 503
)

// AdmitHTTP applies the limiter to one HTTP request of tenant on route
// (for route-scoped decisions; may be empty) that depends on integration
// (may be empty). For a limited tenant it writes RateLimit-Limit (the
// cluster-wide burst, which is the cluster-wide rate per second unless the
// decision sets a burst), RateLimit-Remaining (this instance's bucket) and
// RateLimit-Reset (seconds) into h, and Retry-After for a denied request.
//
// It returns 0 and "" when the request may proceed, else the status to
// answer (429 or 503) and DeniedThrottled, DeniedShed or DeniedCircuitOpen.
// A request admitted with an integration must be followed by
// Breakers().Report with its outcome. Both Middleware and the metering
// middleware of collector/meter answer through it.
func (l *Limiter) AdmitHTTP(h http.Header, tenant, route, integration string, now time.Time) (int, string) {
	res := l.Check(tenant, route, now)
	if res.Limited {
		writeRateLimit(h, &res)
	}
	if !res.Allowed {
		h.Set("Retry-After", seconds(res.RetryAfter, 1))
		if res.Shed {
			return http.StatusTooManyRequests, DeniedShed
		}
		return http.StatusTooManyRequests, DeniedThrottled
	}
	if integration == "" {
		return 0, ""
	}
	if err := l.breakers.Allow(tenant, integration); err != nil {
		var coe *CircuitOpenError
		if errors.As(err, &coe) {
			h.Set("Retry-After", seconds(coe.RetryAfter, 1))
			return http.StatusServiceUnavailable, DeniedCircuitOpen
		}
		h.Set("Retry-After", "1")
		return http.StatusTooManyRequests, DeniedThrottled
	}
	return 0, ""
}

// DenyHTTP writes the response to a request AdmitHTTP denied with status.
func DenyHTTP(w http.ResponseWriter, status int) {
	if status == http.StatusServiceUnavailable {
		http.Error(w, "service unavailable: circuit open", status)
		return
	}
	http.Error(w, "too many requests", status)
}

// HasRouteDecisions reports whether tenant has a live route-scoped decision,
// so a caller that must work to learn a request's route can skip it.
func (l *Limiter) HasRouteDecisions(tenant string) bool {
	t := l.snap.Load().tenants[tenant]
	return t != nil && len(t.routes) > 0
}

// writeRateLimit sets the three RateLimit headers from one backing array:
// one allocation instead of three.
func writeRateLimit(h http.Header, res *Result) {
	v := make([]string, 3)
	v[0] = strconv.Itoa(res.ClusterLimit)
	v[1] = strconv.Itoa(res.Remaining)
	v[2] = seconds(res.Reset, 0)
	h["Ratelimit-Limit"] = v[0:1:1]
	h["Ratelimit-Remaining"] = v[1:2:2]
	h["Ratelimit-Reset"] = v[2:3:3]
}
