package api

import (
	"net/http"
	"strconv"
	"sync"
)

// exportRetryAfter is the Retry-After, in seconds, of a 429 from a full
// export limit.
const exportRetryAfter = 5

// exportSlots caps the streamed exports running at once, in total and per
// token. Each running export holds a ClickHouse connection for as long as
// the client reads, so without a cap a few slow readers hold the whole pool.
type exportSlots struct {
	mu       sync.Mutex
	total    int
	perToken int
	running  int
	byToken  map[string]int
}

func newExportSlots(total, perToken int) *exportSlots {
	return &exportSlots{total: total, perToken: perToken, byToken: map[string]int{}}
}

// acquire takes a slot for token, or reports false when the total or the
// token's own cap is reached. It never waits. release must be called once
// the export ends.
func (e *exportSlots) acquire(token string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.running >= e.total || e.byToken[token] >= e.perToken {
		return false
	}
	e.running++
	e.byToken[token]++
	return true
}

func (e *exportSlots) release(token string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.running--
	if e.byToken[token]--; e.byToken[token] <= 0 {
		delete(e.byToken, token)
	}
}

// inUse returns the running exports, in total and of token.
func (e *exportSlots) inUse(token string) (total, ofToken int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.running, e.byToken[token]
}

// startExport takes an export slot for p, or answers 429 and returns false.
// On true the caller must defer s.exports.release(p.name).
func (s *Server) startExport(w http.ResponseWriter, r *http.Request, p principal) bool {
	if s.exports.acquire(p.name) {
		return true
	}
	total, mine := s.exports.inUse(p.name)
	msg := "too many exports running; retry later"
	if mine >= s.cfg.MaxConcurrentExportsPerToken {
		msg = "this token already runs " + strconv.Itoa(mine) + " exports, the most allowed at once; retry when one ends"
	}
	s.log.Warn("export refused", "principal", p.name, "path", r.URL.Path, "count", total)
	w.Header().Set("Retry-After", strconv.Itoa(exportRetryAfter))
	writeError(w, http.StatusTooManyRequests, msg)
	return false
}
