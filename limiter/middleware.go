package limiter

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
)

// TenantFunc extracts the tenant of a request. An error rejects the
// request with 401.
type TenantFunc func(r *http.Request) (string, error)

// ErrNoTenant is returned by a TenantFunc when the request names no tenant.
var ErrNoTenant = errors.New("no tenant in request")

// HeaderTenant reads the tenant from a header such as X-Tenant-ID. The
// header is trusted: use it behind a gateway that sets it.
func HeaderTenant(name string) TenantFunc {
	// Canonical once here, so that each request's lookup allocates nothing.
	key := textproto.CanonicalMIMEHeaderKey(name)
	return func(r *http.Request) (string, error) {
		var t string
		if v := r.Header[key]; len(v) > 0 {
			t = v[0]
		}
		if t == "" {
			return "", ErrNoTenant
		}
		if !event.ValidTenantID(t) {
			return "", fmt.Errorf("header %s: invalid tenant id", name)
		}
		return t, nil
	}
}

// JWTClaimTenant reads the tenant from claim of an "Authorization: Bearer"
// JWT that VerifyHS256 accepts under secret (leeway 30s for exp and nbf).
func JWTClaimTenant(secret []byte, claim string) TenantFunc {
	return func(r *http.Request) (string, error) {
		auth := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || tok == "" {
			return "", ErrNoTenant
		}
		claims, err := VerifyHS256(strings.TrimSpace(tok), secret, time.Now(), 30*time.Second)
		if err != nil {
			return "", err
		}
		t, _ := claims[claim].(string)
		if !event.ValidTenantID(t) {
			return "", fmt.Errorf("%w: claim %s is not a valid tenant id", ErrInvalidToken, claim)
		}
		return t, nil
	}
}

// HeaderUser reads the end user's id from a header such as X-User-ID; a
// value that is not a valid user id (1..256 bytes of UTF-8 without control
// characters) counts as none. The header is trusted: use it behind a
// gateway that sets it.
func HeaderUser(name string) func(r *http.Request) string {
	key := textproto.CanonicalMIMEHeaderKey(name)
	return func(r *http.Request) string {
		if v := r.Header[key]; len(v) > 0 && ValidUserID(v[0]) {
			return v[0]
		}
		return ""
	}
}

// JWTClaimUser reads the end user's id from claim (such as "sub") of an
// "Authorization: Bearer" JWT that VerifyHS256 accepts under secret; a
// token that does not verify, or a claim that is not a valid user id,
// counts as none.
func JWTClaimUser(secret []byte, claim string) func(r *http.Request) string {
	return func(r *http.Request) string {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			return ""
		}
		claims, err := VerifyHS256(strings.TrimSpace(tok), secret, time.Now(), 30*time.Second)
		if err != nil {
			return ""
		}
		if u, _ := claims[claim].(string); ValidUserID(u) {
			return u
		}
		return ""
	}
}

// MiddlewareConfig configures Middleware.
type MiddlewareConfig struct {
	// Tenant extracts the tenant; required.
	Tenant TenantFunc
	// Route names the request's route for route-scoped decisions; nil
	// means r.Pattern (set by http.ServeMux).
	Route func(r *http.Request) string
	// Integration names the integration the request depends on; when its
	// circuit is open for the tenant the request gets 503. Nil: no check.
	Integration func(r *http.Request) string
	// User names the end user of the request for user-scoped decisions
	// (HeaderUser, JWTClaimUser, or a func of your own); "" means none. Nil:
	// user-scoped decisions do not apply.
	User func(r *http.Request) string
	// AllowAnonymous passes requests without a tenant (ErrNoTenant)
	// through unlimited instead of answering 401.
	AllowAnonymous bool
}

// Middleware enforces the limiter on HTTP requests: 401 when the tenant
// cannot be established, 429 with Retry-After when throttled or shed, 503
// with Retry-After when the integration's circuit is open. Limited tenants
// get RateLimit-Limit (cluster-wide), RateLimit-Remaining and
// RateLimit-Reset (seconds) on every response; see AdmitHTTP. To meter the
// requests as well, use collector/meter, which answers the same way.
func (l *Limiter) Middleware(cfg MiddlewareConfig) (func(http.Handler) http.Handler, error) {
	if cfg.Tenant == nil {
		return nil, errors.New("limiter middleware: Tenant func is required")
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tenant, err := cfg.Tenant(r)
			if err != nil {
				if cfg.AllowAnonymous && errors.Is(err, ErrNoTenant) {
					next.ServeHTTP(w, r)
					return
				}
				http.Error(w, "unauthorized: no valid tenant", http.StatusUnauthorized)
				return
			}
			route := r.Pattern
			if cfg.Route != nil {
				route = cfg.Route(r)
			}
			integ := ""
			if cfg.Integration != nil {
				integ = cfg.Integration(r)
			}
			user := ""
			if cfg.User != nil && l.HasUserDecisions(tenant) {
				user = cfg.User(r)
			}
			if status, _ := l.AdmitHTTPUser(w.Header(), tenant, route, user, integ, time.Now()); status != 0 {
				DenyHTTP(w, status)
				return
			}
			if integ != "" {
				sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
				next.ServeHTTP(sw, r)
				var rerr error
				if sw.status >= 500 {
					rerr = fmt.Errorf("status %d", sw.status)
				}
				l.breakers.Report(tenant, integ, rerr)
				return
			}
			next.ServeHTTP(w, r)
		})
	}, nil
}

// seconds renders d as whole seconds, rounded up, at least min.
func seconds(d time.Duration, min int) string {
	s := int(math.Ceil(d.Seconds()))
	if s < min {
		s = min
	}
	return strconv.Itoa(s)
}

type statusWriter struct {
	http.ResponseWriter
	status  int
	written bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.written {
		s.status, s.written = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.written = true
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
