package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/tenantguard/tenantguard/anomaly/advisor"
)

// Advisor judges heavy tenants over a range; *advisor.Advisor is one.
type Advisor interface {
	Report(ctx context.Context, from, to time.Time) (advisor.Report, error)
	Config() advisor.Config
}

var _ Advisor = (*advisor.Advisor)(nil)

// advice: GET /api/v1/advice[?from&to] (admin): the heavy-tenant report
// over [from, to), widened to whole hours; without from and to, the last
// advisor.window of complete hours. The body is advisor.Report's JSON, as
// `tenantguard advise --format json` prints it.
func (s *Server) advice(w http.ResponseWriter, r *http.Request, _ principal, _ string) {
	if s.advisor == nil {
		writeError(w, http.StatusServiceUnavailable, "the advisor is not configured")
		return
	}
	p := parseParams(r.URL.RawQuery)
	_, hasFrom := p.v["from"]
	_, hasTo := p.v["to"]
	from, to := s.advisor.Config().LastWindow(time.Now())
	if hasFrom || hasTo {
		from, to = p.timeRange(min(s.cfg.MaxRange, advisor.MaxRange))
	}
	if err := p.done(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	rep, err := s.advisor.Report(r.Context(), from, to)
	if errors.Is(err, advisor.ErrRange) {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err != nil {
		s.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}
