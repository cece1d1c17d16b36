package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/tenantguard/tenantguard/exporter/billing"
)

// streamWriter sends every write to the client at once: the exporter writes
// through its own 64 KiB buffer, so the response leaves in 64 KiB chunks and
// neither side holds the whole export.
//
// Each write gets a deadline of timeout: a client that stops reading gets a
// write error after timeout instead of blocking the export (and its
// ClickHouse connection) forever. The first failed write cancels the
// export's context, so the ClickHouse query is cancelled rather than drained.
type streamWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	cancel  context.CancelFunc
	n       int64
	flushes int
	err     error // the first write error
}

func newStreamWriter(w http.ResponseWriter, timeout time.Duration, cancel context.CancelFunc) *streamWriter {
	return &streamWriter{w: w, rc: http.NewResponseController(w), timeout: timeout, cancel: cancel}
}

func (s *streamWriter) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	s.setDeadline()
	n, err := s.w.Write(p)
	s.n += int64(n)
	if err == nil {
		if err = s.rc.Flush(); errors.Is(err, http.ErrNotSupported) {
			err = nil
		}
	}
	if err != nil {
		s.err = err
		s.cancel()
		return n, err
	}
	s.flushes++
	return n, nil
}

// setDeadline bounds the next write, and after the last one the server's
// final flush of the response; net/http clears it before the connection
// serves its next request.
func (s *streamWriter) setDeadline() {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout)) // ErrNotSupported: not a net/http server connection
}

// streamFailed ends a stream that broke. A failed write to the client (it
// went away, or stopped reading past ExportWriteTimeout) aborts the
// connection. Otherwise, before the first byte it can still answer 500;
// after, the only honest signal is to abort the connection, so the client
// sees a truncated transfer rather than a short but valid-looking file.
func (s *Server) streamFailed(sw *streamWriter, w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case sw.err != nil:
		if errors.Is(sw.err, os.ErrDeadlineExceeded) {
			s.log.Warn("export cut: the client stopped reading", "path", r.URL.Path, "count", sw.n,
				"duration", s.cfg.ExportWriteTimeout)
		}
		panic(http.ErrAbortHandler)
	case r.Context().Err() != nil:
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

// HeaderExportID carries the id a billing export is recorded under.
const HeaderExportID = "X-Tenantguard-Export-Id"

func stamp(t time.Time) string { return t.UTC().Format("20060102T150405Z") }

// billingExport: GET /api/v1/billing/export?from&to[&tenant]&format=csv|json
// [&record=false][&adjust_from=ID] (admin, billing). json is NDJSON
// (application/x-ndjson). An export of a closed period is recorded (its id
// in the X-Tenantguard-Export-Id header) unless record=false, and adjusts
// against the earlier export of the period (docs/billing.md).
func (s *Server) billingExport(w http.ResponseWriter, r *http.Request, caller principal, _ string) {
	p := parseParams(r.URL.RawQuery)
	from, to := p.timeRange(s.cfg.MaxRange)
	tenant := p.tenant("tenant")
	format := p.enum("format", "csv", "csv", "json", "ndjson") // ndjson: an alias of json
	record := p.enum("record", "true", "true", "false")
	adjustFrom, _ := p.get("adjust_from")
	if err := p.done(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	name := "billing-" + stamp(from) + "-" + stamp(to)
	if tenant != "" {
		name += "-" + tenant
	}
	s.stream(w, r, caller, name, format, "billing", func(ctx context.Context, sw *streamWriter) error {
		sum, err := s.exp.Billing(ctx, sw, billing.Request{From: from, To: to, Tenant: tenant, Format: billing.Format(format),
			NoRecord: record == "false", AdjustFrom: adjustFrom,
			ExportID: func(id string) { w.Header().Set(HeaderExportID, id) }})
		if err == nil {
			s.log.Info("billing export", "tenant", tenant, "count", sum.Lines, "events", sum.Events,
				"export_id", sum.ExportID, "adjusted", sum.Adjusted)
		}
		if sum.NonFinite > 0 {
			s.log.Warn("billing export: stored quantities that are not finite were left empty", "tenant", tenant, "count", sum.NonFinite)
		}
		return err
	})
}

// events: GET /api/v1/tenants/{tenant_id}/events?from&to&format=ndjson|csv
// (admin, the tenant itself): raw events in wire format v1, streamed.
func (s *Server) events(w http.ResponseWriter, r *http.Request, caller principal, tenant string) {
	p := parseParams(r.URL.RawQuery)
	from, to := p.timeRange(s.cfg.MaxRange)
	format := p.enum("format", "ndjson", "ndjson", "json", "csv") // json: an alias of ndjson
	if err := p.done(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	name := "events-" + tenant + "-" + stamp(from) + "-" + stamp(to)
	s.stream(w, r, caller, name, format, "events", func(ctx context.Context, sw *streamWriter) error {
		n, err := s.exp.Events(ctx, sw, billing.EventsRequest{Tenant: tenant, From: from, To: to, Format: billing.Format(format)})
		if err == nil {
			s.log.Info("events export", "tenant", tenant, "count", n)
		}
		return err
	})
}

// stream runs one streamed export under the export caps: the headers for
// format, a write deadline per write, and one error path (a 400 while
// nothing is written, else the stream is cut).
func (s *Server) stream(w http.ResponseWriter, r *http.Request, caller principal, name, format, what string, run func(context.Context, *streamWriter) error) {
	if !s.startExport(w, r, caller) {
		return
	}
	defer s.exports.release(caller.name)
	if format == "csv" {
		setStreamHeaders(w, "text/csv; charset=utf-8", name+".csv")
	} else {
		setStreamHeaders(w, "application/x-ndjson", name+".ndjson")
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	sw := newStreamWriter(w, s.cfg.ExportWriteTimeout, cancel)
	if err := run(ctx, sw); err != nil {
		if errors.Is(err, billing.ErrInvalid) && sw.n == 0 {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		s.streamFailed(sw, w, r, fmt.Errorf("%s export: %w", what, err))
		return
	}
	sw.setDeadline()
}
