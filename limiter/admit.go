package limiter

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"
	"unsafe"
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
	return l.AdmitHTTPUser(h, tenant, route, "", integration, now)
}

// AdmitHTTPUser is AdmitHTTP that also applies a user-scoped decision of
// user (may be empty) on top of the tenant's; see CheckUser.
func (l *Limiter) AdmitHTTPUser(h http.Header, tenant, route, user, integration string, now time.Time) (int, string) {
	res := l.CheckUser(tenant, route, user, now)
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

// rateLimitValues holds the three RateLimit header values and their
// bytes: writeRateLimit sets the headers with this one allocation.
type rateLimitValues struct {
	v [3]string
	b [3 * 20]byte
}

// writeRateLimit sets the three RateLimit headers in one allocation,
// whatever the numbers, where h.Set and strconv take up to six.
func writeRateLimit(h http.Header, res *Result) {
	rv := new(rateLimitValues)
	b := strconv.AppendInt(rv.b[:0], int64(res.ClusterLimit), 10)
	i := len(b)
	b = strconv.AppendInt(b, int64(res.Remaining), 10)
	j := len(b)
	b = strconv.AppendInt(b, max(0, int64(math.Ceil(res.Reset.Seconds()))), 10)
	// As strings.Builder does: the bytes are written once, above, and
	// never again, so a string may share them.
	s := unsafe.String(unsafe.SliceData(b), len(b))
	rv.v = [3]string{s[:i], s[i:j], s[j:]}
	h["Ratelimit-Limit"] = rv.v[0:1:1]
	h["Ratelimit-Remaining"] = rv.v[1:2:2]
	h["Ratelimit-Reset"] = rv.v[2:3:3]
}
