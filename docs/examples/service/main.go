// Command service is an example multi-tenant service instrumented with
// tenantguard's SDK: every HTTP request is metered and guarded, every call
// to its payment provider goes through a per-tenant circuit breaker and is
// metered, and every Postgres query is metered per tenant, under row-level
// security.
//
// Run it against `tenantguard dev`, which prints its NATS URL (4222 when that
// port is free) and the public key its decisions are signed with ("limiters
// trust ed25519:…"):
//
//	tenantguard dev &
//	go run ./docs/examples/service -nats nats://127.0.0.1:4222 -trusted-key ed25519:<key> \
//		-pg postgres://app@127.0.0.1:5432/app
//	curl -H 'X-Tenant-ID: acme' -H 'X-User-ID: u_42' -d '{"amount":"12.50"}' localhost:8081/v1/invoices
//	curl -H 'X-Tenant-ID: acme' localhost:8081/v1/invoices
//
// The usage lands in ClickHouse (api_request, webhook_call, db_query), the
// service's own metrics are on /metrics, and `tenantguard throttle --tenant
// acme --rate 1` makes acme's excess requests answer 429.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/meter"
	"github.com/tenantguard/tenantguard/collector/pgmeter"
	"github.com/tenantguard/tenantguard/limiter"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "HTTP address")
	natsURL := flag.String("nats", nats.DefaultURL, "NATS URL (tenantguard dev prints it)")
	trustedKey := flag.String("trusted-key", "", "public key of the decisions (tenantguard dev prints it: limiters trust ed25519:…)")
	pgDSN := flag.String("pg", "", "Postgres DSN; use a role that does not own the table, so row-level security applies")
	payments := flag.String("payments", "", "payment provider URL; empty: a built-in stub")
	failRate := flag.Float64("payments-fail", 0, "built-in stub: share of calls that fail with 502")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, *listen, *natsURL, *trustedKey, *pgDSN, *payments, *failRate); err != nil {
		log.Error("service", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, listen, natsURL, trustedKey, pgDSN, payments string, failRate float64) error {
	if pgDSN == "" || trustedKey == "" {
		return errors.New("-pg and -trusted-key are required")
	}
	nc, err := nats.Connect(natsURL, nats.Name("invoices-api"), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	reg := prometheus.NewRegistry()

	// The emitter publishes usage events; the limiter follows tenantguard's
	// decisions. Group names this service's instances, which split the
	// cluster-wide rates among themselves; it defaults to the program's
	// name, and is set here so that no other service shares it.
	ecfg := emit.DefaultConfig()
	ecfg.Service, ecfg.Overflow = "invoices-api", emit.Drop
	em, err := emit.New(nc, ecfg)
	if err != nil {
		return err
	}
	if err := em.Register(reg); err != nil {
		return err
	}
	lcfg := limiter.DefaultConfig()
	lcfg.Group = "invoices-api"
	lcfg.TrustedKeys = []string{trustedKey} // only decisions signed by this key apply
	lim, err := limiter.New(lcfg, limiter.Deps{Conn: nc, Registerer: reg, Logger: log})
	if err != nil {
		return err
	}
	go lim.Run(ctx)
	defer lim.Close()

	mcfg := meter.DefaultConfig()
	mcfg.Service = "invoices-api"
	mcfg.HTTP.Tenant = limiter.HeaderTenant("X-Tenant-ID")
	mcfg.HTTP.User = func(r *http.Request) string { return r.Header.Get("X-User-ID") }
	m, err := meter.New(mcfg, meter.Deps{Emitter: em, Limiter: lim, Registerer: reg, Logger: log})
	if err != nil {
		return err
	}
	defer func() { // the meter before the emitter, so every record is handed over
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = m.Close(cctx)
		_ = em.Close(cctx)
	}()

	// Postgres: every query through this pool is a db_query event of the
	// tenant in its context.
	pcfg, err := pgxpool.ParseConfig(pgDSN)
	if err != nil {
		return err
	}
	if pcfg.ConnConfig.Tracer, err = pgmeter.New(m, pgmeter.DefaultConfig()); err != nil {
		return err
	}
	db, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := migrate(ctx, db); err != nil {
		return err
	}

	if payments == "" {
		stub, err := paymentsStub(failRate)
		if err != nil {
			return err
		}
		defer stub.Close()
		payments = "http://" + stub.Addr().String()
	}
	svc := &service{db: db, payments: payments,
		// Calls to the payment provider: per-tenant breaker, metered.
		client: &http.Client{Transport: m.Transport("payments", nil), Timeout: 5 * time.Second}}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/invoices", svc.list)
	mux.HandleFunc("POST /v1/invoices", svc.create)
	api := http.NewServeMux()
	api.Handle("/v1/", m.Handler(mux)) // every request: tenant, guard, event
	api.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	api.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: api, ReadHeaderTimeout: 5 * time.Second}
	log.Info("listening", "addr", ln.Addr().String(), "payments", payments)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// migrate creates the invoices table with row-level security forced: a
// tenant sees only the rows whose tenant_id is app.current_tenant.
func migrate(ctx context.Context, db *pgxpool.Pool) error {
	for _, s := range []string{
		`CREATE TABLE IF NOT EXISTS invoices (id bigserial PRIMARY KEY, tenant_id text NOT NULL,
			amount numeric(12,2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`,
		`ALTER TABLE invoices ENABLE ROW LEVEL SECURITY`,
		`ALTER TABLE invoices FORCE ROW LEVEL SECURITY`,
		`DO $$ BEGIN
			CREATE POLICY tenant_isolation ON invoices
				USING (tenant_id = current_setting('app.current_tenant', true))
				WITH CHECK (tenant_id = current_setting('app.current_tenant', true));
		EXCEPTION WHEN duplicate_object THEN NULL; END $$`,
	} {
		if _, err := db.Exec(ctx, s); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	return nil
}

type service struct {
	db       *pgxpool.Pool
	client   *http.Client
	payments string
}

type invoice struct {
	ID     int64  `json:"id"`
	Amount string `json:"amount"`
}

// list returns the tenant's invoices. The request's context carries the
// tenant (the meter's Handler put it there); InTenant makes Postgres
// enforce it.
func (s *service) list(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var out []invoice
	err := pgmeter.InTenant(ctx, s.db, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "SELECT id, amount::text FROM invoices ORDER BY id DESC LIMIT 100")
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowToStructByPos[invoice])
		return err
	})
	if err != nil {
		http.Error(w, "database: "+err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// create charges the payment provider for the tenant, then stores the
// invoice. While the provider's circuit is open for the tenant the charge
// fails fast and the request answers 503.
func (s *service) create(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var in struct {
		Amount string `json:"amount"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<10)).Decode(&in); err != nil || in.Amount == "" {
		http.Error(w, `want {"amount":"12.50"}`, http.StatusBadRequest)
		return
	}
	req, _ := http.NewRequestWithContext(ctx, "POST", s.payments+"/charges", nil)
	resp, err := s.client.Do(req)
	if err != nil {
		if errors.Is(err, limiter.ErrCircuitOpen) {
			http.Error(w, "payments unavailable, retry later", http.StatusServiceUnavailable)
			return
		}
		http.Error(w, "payments: "+err.Error(), http.StatusBadGateway)
		return
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		http.Error(w, "payments declined: "+resp.Status, http.StatusBadGateway)
		return
	}
	var inv invoice
	inv.Amount = in.Amount
	err = pgmeter.InTenant(ctx, s.db, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "INSERT INTO invoices (tenant_id, amount) VALUES (current_setting('app.current_tenant'), $1) RETURNING id",
			in.Amount).Scan(&inv.ID)
	})
	if err != nil {
		http.Error(w, "database: "+err.Error(), http.StatusBadRequest)
		return
	}
	writeJSON(w, http.StatusCreated, inv)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// paymentsStub stands for a third-party payment API; it fails failRate of
// its calls with 502.
func paymentsStub(failRate float64) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if rand.Float64() < failRate {
			http.Error(w, "upstream error", http.StatusBadGateway)
			return
		}
		w.Write([]byte(`{"status":"succeeded"}`))
	}))
	return ln, nil
}
