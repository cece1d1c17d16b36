package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/exporter/billing"
)

// DB is the ClickHouse access the API needs; *store.Store satisfies it.
type DB interface {
	Conn() driver.Conn
	Database() string
}

// Exporter streams the billing and raw-events exports; *billing.Exporter
// satisfies it.
type Exporter interface {
	Billing(ctx context.Context, w io.Writer, req billing.Request) (billing.Summary, error)
	Events(ctx context.Context, w io.Writer, req billing.EventsRequest) (int64, error)
}

var _ Exporter = (*billing.Exporter)(nil)

// Deps are the Server's collaborators.
type Deps struct {
	// DB is required.
	DB DB
	// Exporter is required for the two export endpoints.
	Exporter Exporter
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Currency is the price book's currency, shown on cost responses.
	// Default "USD".
	Currency string
	// Advisor serves GET /api/v1/advice; nil answers 503 there.
	Advisor Advisor
	// Ready are extra readiness checks for /readyz, besides pinging
	// ClickHouse (for example "the collector's inserts succeed"). Each
	// error is one line of the answer, so it starts with what it checks
	// ("nats: not connected") and names no address or credential.
	Ready []func(context.Context) error
}

// Server is the HTTP API.
type Server struct {
	cfg       Config
	db        DB
	exp       Exporter
	advisor   Advisor
	log       *slog.Logger
	ready     []func(context.Context) error
	currency  string
	auth      *authenticator
	exports   *exportSlots
	ln        net.Listener
	srv       *http.Server
	handler   http.Handler
	closeOnce sync.Once
}

// New validates cfg, binds cfg.Listen and returns a Server ready to Run.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.DB == nil || deps.Exporter == nil {
		return nil, errors.New("api: DB and Exporter are required")
	}
	if !store.ValidIdent(deps.DB.Database()) {
		return nil, fmt.Errorf("api: database name %q is not a plain identifier", deps.DB.Database())
	}
	auth, err := newAuthenticator(cfg.Tokens)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, db: deps.DB, exp: deps.Exporter, advisor: deps.Advisor, log: deps.Logger, ready: deps.Ready, auth: auth,
		exports: newExportSlots(cfg.MaxConcurrentExports, cfg.MaxConcurrentExportsPerToken)}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.currency = deps.Currency
	if s.currency == "" {
		s.currency = "USD"
	}
	s.log = s.log.With("component", "api")
	s.handler = s.routes()
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("api listener %s: %w", cfg.Listen, err)
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		// No WriteTimeout: exports stream for as long as the client reads;
		// each of their writes has its own deadline (ExportWriteTimeout).
	}
	return s, nil
}

// Addr is the bound listener address, useful with Listen ":0".
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Handler returns the API's handler, to mount or test without the listener.
func (s *Server) Handler() http.Handler { return s.handler }

// Run serves until ctx ends, then shuts down gracefully within
// cfg.ShutdownTimeout. It returns nil on a clean shutdown.
func (s *Server) Run(ctx context.Context) error {
	s.log.Info("listening", "addr", s.Addr())
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("api server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		_ = s.srv.Close()
		return fmt.Errorf("api shutdown: %w", err)
	}
	return nil
}

// Close stops serving at once; it is idempotent.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		err = s.srv.Close()
		_ = s.ln.Close()
	})
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// handlerFunc is an endpoint: it gets the authorized caller and the path's
// validated tenant ("" when the path has none).
type handlerFunc func(w http.ResponseWriter, r *http.Request, p principal, tenant string)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /api/v1/billing/export", s.guard(billingRead, s.billingExport))
	mux.Handle("GET /api/v1/costs", s.guard(billingRead, s.costs))
	mux.Handle("GET /api/v1/anomalies", s.guard(adminOnly, s.anomalies))
	mux.Handle("GET /api/v1/decisions", s.guard(adminOnly, s.decisions))
	mux.Handle("GET /api/v1/pg/findings", s.guard(adminOnly, s.pgFindings))
	mux.Handle("GET /api/v1/advice", s.guard(adminOnly, s.advice))
	mux.Handle("GET /api/v1/tenants/{tenant_id}/usage", s.guard(usageRead, s.usage))
	mux.Handle("GET /api/v1/tenants/{tenant_id}/cost", s.guard(usageRead, s.tenantCost))
	mux.Handle("GET /api/v1/tenants/{tenant_id}/anomalies", s.guard(tenantPrivate, s.anomalies))
	mux.Handle("GET /api/v1/tenants/{tenant_id}/decisions", s.guard(tenantPrivate, s.decisions))
	mux.Handle("GET /api/v1/tenants/{tenant_id}/events", s.guard(tenantPrivate, s.events))
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		// Unknown paths answer 401 before 404 to anonymous callers, so the
		// API's shape is not probed without a token.
		if _, ok := s.auth.authenticate(r); !ok {
			unauthorized(w)
			return
		}
		writeError(w, http.StatusNotFound, "no such endpoint")
	})
	return mux
}

// guard authenticates (401), validates the path's tenant id (400) and
// authorizes (403) before h runs.
func (s *Server) guard(allow access, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		p, ok := s.auth.authenticate(r)
		if !ok {
			unauthorized(w)
			s.log.Debug("unauthorized", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			return
		}
		tenant := r.PathValue("tenant_id")
		// A {tenant_id} wildcard never matches an empty segment, so "" means
		// the route has none.
		if tenant != "" && !event.ValidTenantID(tenant) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("tenant_id: %s must match %s", safe(tenant), event.TenantPattern))
			return
		}
		if !allow(p, tenant) {
			writeError(w, http.StatusForbidden, "this token may not read this resource")
			s.log.Info("forbidden", "principal", p.name, "path", r.URL.Path)
			return
		}
		h(w, r, p, tenant)
		s.log.Debug("request", "principal", p.name, "method", r.Method, "path", r.URL.Path, "tenant", tenant,
			"duration", time.Since(start))
	})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz pings ClickHouse and runs the extra checks, all at once: 200
// "ready" when every one passes, else 503 with one line per failing check,
// each naming its cause ("nats: not connected").
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	checks := append([]func(context.Context) error{s.pingClickHouse}, s.ready...)
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, check := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = check(ctx)
		}()
	}
	wg.Wait()
	var failing []string
	for _, err := range errs {
		if err != nil {
			failing = append(failing, err.Error())
		}
	}
	if len(failing) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, readyBody{Status: "not ready", Error: strings.Join(failing, "; "), Failing: failing})
		return
	}
	writeJSON(w, http.StatusOK, readyBody{Status: "ready"})
}

// readyBody is /readyz's answer: error joins the failing checks, failing
// lists them one by one.
type readyBody struct {
	Status  string   `json:"status"`
	Error   string   `json:"error,omitempty"`
	Failing []string `json:"failing,omitempty"`
}

// pingClickHouse is the readiness check of the API's own pool. Its error
// says what failed, never where: /readyz needs no token.
func (s *Server) pingClickHouse(ctx context.Context) error {
	if err := s.db.Conn().Ping(ctx); err != nil {
		s.log.Warn("not ready", "err", err)
		return errors.New("clickhouse: not reachable")
	}
	return nil
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="tenantguard"`)
	writeError(w, http.StatusUnauthorized, "missing or invalid bearer token")
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

// writeJSON encodes v before it writes the status, so a value that cannot
// be encoded answers 500 with a reason instead of an empty 200.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		buf.Reset()
		status = http.StatusInternalServerError
		_ = enc.Encode(errorBody{Error: "the response could not be encoded: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// internal logs err once and answers 500 without leaking SQL or internals.
func (s *Server) internal(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away
	}
	s.log.Error("request failed", "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error")
}
