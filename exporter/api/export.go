package api

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tenantguard/tenantguard/exporter/billing"
)

// streamWriter sends every write to the client at once: the exporter writes
// through its own 64 KiB buffer, so the response leaves in 64 KiB chunks and
// neither side holds the whole export.
type streamWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	n       int64
	flushes int
}

func newStreamWriter(w http.ResponseWriter) *streamWriter {
	return &streamWriter{w: w, rc: http.NewResponseController(w)}
}

func (s *streamWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	s.n += int64(n)
	if err != nil {
		return n, err
	}
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return n, err
	}
	s.flushes++
	return n, nil
}

// fail ends a stream that broke: before the first byte it can still answer
// 500; after, the only honest signal is to abort the connection, so the
// client sees a truncated transfer rather than a short but valid-looking file.
func (s *Server) streamFailed(sw *streamWriter, w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return // the client went away
	}
	s.log.Error("export failed", "path", r.URL.Path, "count", sw.n, "err", err)
	if sw.n == 0 {
		w.Header().Del("Content-Disposition")
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	panic(http.ErrAbortHandler)
}

func setStreamHeaders(w http.ResponseWriter, contentType, filename string) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Disposition", `attachment; filename="`+filename+`"`)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
}

func stamp(t time.Time) string { return t.UTC().Format("20060102T150405Z") }

// billingExport: GET /api/v1/billing/export?from&to[&tenant]&format=csv|json
// (admin, billing). json is NDJSON (application/x-ndjson).
func (s *Server) billingExport(w http.ResponseWriter, r *http.Request, _ principal, _ string) {
	p := parseParams(r.URL.RawQuery)
	from, to := p.timeRange(s.cfg.MaxRange)
	tenant := p.tenant("tenant")
	format := p.enum("format", "csv", "csv", "json", "ndjson") // ndjson: an alias of json
	if err := p.done(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	name := "billing-" + stamp(from) + "-" + stamp(to)
	if tenant != "" {
		name += "-" + tenant
	}
	if format == "csv" {
		setStreamHeaders(w, "text/csv; charset=utf-8", name+".csv")
	} else {
		setStreamHeaders(w, "application/x-ndjson", name+".ndjson")
	}
	sw := newStreamWriter(w)
	sum, err := s.exp.Billing(r.Context(), sw, billing.Request{From: from, To: to, Tenant: tenant, Format: billing.Format(format)})
	if err != nil {
		if errors.Is(err, billing.ErrInvalid) && sw.n == 0 {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.streamFailed(sw, w, r, fmt.Errorf("billing export: %w", err))
		return
	}
	s.log.Info("billing export", "tenant", tenant, "count", sum.Lines, "events", sum.Events)
}

// events: GET /api/v1/tenants/{tenant_id}/events?from&to&format=ndjson|csv
// (admin, the tenant itself): raw events in wire format v1, streamed.
func (s *Server) events(w http.ResponseWriter, r *http.Request, _ principal, tenant string) {
	p := parseParams(r.URL.RawQuery)
	from, to := p.timeRange(s.cfg.MaxRange)
	format := p.enum("format", "ndjson", "ndjson", "json", "csv") // json: an alias of ndjson
	if err := p.done(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	name := "events-" + tenant + "-" + stamp(from) + "-" + stamp(to)
	if format == "csv" {
		setStreamHeaders(w, "text/csv; charset=utf-8", name+".csv")
	} else {
		setStreamHeaders(w, "application/x-ndjson", name+".ndjson")
	}
	sw := newStreamWriter(w)
	n, err := s.exp.Events(r.Context(), sw, billing.EventsRequest{Tenant: tenant, From: from, To: to, Format: billing.Format(format)})
	if err != nil {
		if errors.Is(err, billing.ErrInvalid) && sw.n == 0 {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.streamFailed(sw, w, r, fmt.Errorf("events export: %w", err))
		return
	}
	s.log.Info("events export", "tenant", tenant, "count", n)
}
