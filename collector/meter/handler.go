package meter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/limiter"
)

// maxUser bounds a user id put into events.
const maxUser = 256

// Handler wraps next: every request is attributed to its tenant (401 when
// there is none, unless AllowAnonymous), guarded by the limiter (429 with
// Retry-After when throttled or shed, 503 when its integration's circuit
// is open), served with the tenant and user in its context, and metered as
// one event: route template, status, latency, error, and request_bytes and
// response_bytes in attrs. A denied request is metered too, with
// attrs.rejected = throttled, shed or circuit_open. A panic is metered as
// an error (status 500, attrs.panic) and left to propagate unrecovered.
//
// Wrap the whole http.ServeMux, or each of its handlers; either way the
// route is the mux's pattern (r.Pattern), never the raw path.
func (m *Meter) Handler(next http.Handler) http.Handler {
	h := &handler{m: m, next: next, cfg: m.cfg.HTTP}
	h.mux, _ = next.(*http.ServeMux)
	return h
}

type handler struct {
	m    *Meter
	next http.Handler
	mux  *http.ServeMux // next, if it is one: its pattern can be looked up before serving
	cfg  HTTPConfig
}

// request is everything a request needs beyond the bare handler, in one
// allocation: the context node carrying the identity, the response writer
// and the request body counter.
type request struct {
	context.Context
	id   event.Identity
	w    responseWriter
	body bodyCounter
}

func (r *request) Value(key any) any {
	if _, ok := key.(event.IdentityKey); ok {
		return &r.id
	}
	return r.Context.Value(key)
}

func (r *request) String() string { return "meter.request(" + r.id.Tenant + ")" }

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id, err := h.identity(r)
	if err != nil {
		if h.cfg.AllowAnonymous && errors.Is(err, limiter.ErrNoTenant) {
			h.next.ServeHTTP(w, r)
			return
		}
		h.m.stats.denied[denyUnauthorized].Add(1)
		http.Error(w, "unauthorized: no valid tenant", http.StatusUnauthorized)
		return
	}
	// The route: the Route func's, else the pattern of the mux this
	// handler wraps (known after serving; looked up before only when a
	// route-scoped decision needs it), else the pattern of the mux that
	// routed to this handler.
	var route string
	switch {
	case h.cfg.Route != nil:
		route = h.cfg.Route(r)
	case h.mux != nil:
		if h.m.guard && h.m.lim.HasRouteDecisions(id.Tenant) {
			_, route = h.mux.Handler(r)
		}
	default:
		route = r.Pattern
	}
	integ := ""
	if h.cfg.Integration != nil {
		integ = h.cfg.Integration(r)
	}
	if h.m.guard {
		if status, reason := h.m.lim.AdmitHTTPUser(w.Header(), id.Tenant, route, id.User, integ, start); status != 0 {
			limiter.DenyHTTP(w, status)
			if route == "" && h.mux != nil {
				_, route = h.mux.Handler(r)
			}
			h.m.stats.denied[denyIndex(reason)].Add(1)
			rec := Record{Kind: h.cfg.Kind, Identity: id, Route: route, Time: start,
				Latency: time.Since(start), Status: status}
			rec.Add(Int("request_bytes", max(r.ContentLength, 0)))
			rec.Add(String("rejected", reason))
			h.m.Record(&rec)
			return
		}
	}
	st := &request{Context: r.Context(), id: id}
	st.w.ResponseWriter = w
	r2 := r.WithContext(st)
	if r.Body != nil && r.Body != http.NoBody {
		st.body.rc = r.Body
		r2.Body = &st.body
	}
	completed := false
	defer func() {
		h.finish(st, r, r2, route, integ, start, !completed)
	}()
	h.next.ServeHTTP(&st.w, r2)
	completed = true
}

// identity resolves the tenant and user of r.
func (h *handler) identity(r *http.Request) (event.Identity, error) {
	cid, hasCtx := event.IdentityFrom(r.Context())
	id := cid
	if h.cfg.Tenant != nil {
		t, err := h.cfg.Tenant(r)
		if err != nil {
			return id, err
		}
		id.Tenant = t
		if t != cid.Tenant {
			id.User = ""
		}
	} else if !hasCtx {
		return id, limiter.ErrNoTenant
	}
	if h.cfg.User != nil {
		id.User = h.cfg.User(r)
	}
	if len(id.User) > maxUser {
		id.User = ""
	}
	return id, nil
}

// finish meters a served request and reports its integration's outcome.
// panicking is true while a panic unwinds through the handler; the panic
// goes on after finish returns.
func (h *handler) finish(st *request, r, r2 *http.Request, route, integ string, start time.Time, panicking bool) {
	status := st.w.status
	if status == 0 {
		status = http.StatusOK
	}
	if panicking {
		status = http.StatusInternalServerError
		h.m.stats.panics.Add(1)
	}
	if h.m.guard && integ != "" {
		var err error
		if status >= 500 {
			err = fmt.Errorf("status %d", status)
		}
		h.m.lim.Breakers().Report(st.id.Tenant, integ, err)
	}
	if !h.m.meter {
		return
	}
	if h.cfg.Route == nil && r2.Pattern != "" {
		route = r2.Pattern // set by the wrapped http.ServeMux
	}
	rec := Record{Kind: h.cfg.Kind, Identity: st.id, Route: route, Time: start, Latency: time.Since(start),
		Status: status, Error: status >= 500}
	rec.Add(Int("request_bytes", max(r.ContentLength, st.body.n)))
	rec.Add(Int("response_bytes", st.w.bytes))
	if panicking {
		rec.Add(String("panic", "true"))
	}
	h.m.Record(&rec)
}

// responseWriter records the status and counts the body bytes. It keeps
// the optional interfaces handlers use (Flusher, Hijacker, ReaderFrom),
// and Unwrap for http.ResponseController.
type responseWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *responseWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 { // 1xx are informational
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *responseWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, src)
	}
	w.bytes += n
	return n, err
}

func (w *responseWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

var (
	_ http.Flusher  = (*responseWriter)(nil)
	_ http.Hijacker = (*responseWriter)(nil)
	_ io.ReaderFrom = (*responseWriter)(nil)
)

// bodyCounter counts the request body bytes the handler reads.
type bodyCounter struct {
	rc io.ReadCloser
	n  int64
}

func (b *bodyCounter) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.n += int64(n)
	return n, err
}

func (b *bodyCounter) Close() error { return b.rc.Close() }
