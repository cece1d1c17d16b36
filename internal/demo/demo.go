// Package demo is what `tenantguard dev --demo` adds to the daemon:
// synthetic traffic from several tenants, one of them noisy, sent through
// the limiter SDK as a service would send it, a price book, and a live
// terminal table of the busiest tenants with their decisions and alerts.
package demo

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/loadgen"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/internal/daemon"
	"github.com/tenantguard/tenantguard/limiter"
)

// Deps are what the demo runs with.
type Deps struct {
	Daemon     *daemon.Daemon     // the running daemon, for the live view
	NATS       *nats.Conn         // the demo's own connection (its limiter watches decisions on it)
	Emitter    *emit.Emitter      // meters the admitted requests
	Generator  *loadgen.Generator // the traffic, one tenant noisy
	Noisy      string             // the noisy tenant, marked in the view
	TrustedKey string             // the public key the daemon signs decisions with
	Currency   string             // the price book's currency, shown with the costs
	Tenants    int                // how many tenants the generator sends for
	Header     []string           // lines under the view's title: the stack's addresses
	Out        io.Writer          // where the live view is printed
	Logger     *slog.Logger
}

// Run sends the generator's traffic through the limiter SDK, as a service
// that embeds it would (a throttled tenant's excess is rejected, not
// metered), and prints the live view every 2 s, until ctx ends or the
// traffic is done. Every goroutine it starts has ended when it returns.
func Run(ctx context.Context, deps Deps) error {
	lcfg := limiter.DefaultConfig()
	lcfg.TrustedKeys = []string{deps.TrustedKey}
	lim, err := limiter.New(lcfg, limiter.Deps{Conn: deps.NATS, Logger: deps.Logger})
	if err != nil {
		return err
	}
	defer lim.Close()
	svc := &guardedService{lim: lim, em: deps.Emitter, rejected: map[string]*atomic.Uint64{}}
	view := newLiveView(deps.Out, deps.Daemon, deps.Noisy)
	view.rejected = svc.rejectedCount
	view.currency, view.tenants, view.header = deps.Currency, deps.Tenants, deps.Header
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { _ = lim.Run(ctx) })
	wg.Go(func() { view.run(ctx) })
	_, err = deps.Generator.Run(ctx, svc, nil)
	return err
}

// guardedService stands for a service that embeds the limiter: each request
// is admitted or rejected, and only admitted ones are metered.
type guardedService struct {
	lim      *limiter.Limiter
	em       *emit.Emitter
	mu       sync.Mutex
	rejected map[string]*atomic.Uint64
}

func (s *guardedService) Emit(ctx context.Context, e event.Event) error {
	if s.lim.Allow(e.TenantID) {
		return s.em.Emit(ctx, e)
	}
	s.mu.Lock()
	c := s.rejected[e.TenantID]
	if c == nil {
		c = new(atomic.Uint64)
		s.rejected[e.TenantID] = c
	}
	s.mu.Unlock()
	c.Add(1)
	return nil
}

func (s *guardedService) rejectedCount(tenant string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.rejected[tenant]; c != nil {
		return c.Load()
	}
	return 0
}

// Pricing is the price book dev uses when none is configured.
func Pricing() pricing.Config {
	c := pricing.DefaultConfig()
	c.Version = "dev-demo"
	c.Prices = map[string]string{
		"api_request": "0.0001", "db_query": "0.00002", "ai_tokens": "0.000002",
		"webhook_call": "0.0005", "compute_seconds": "0.00005", "job_run": "0.001", "storage_bytes": "0.000000001",
	}
	c.Plans = map[string]pricing.Plan{"default": {SpendCap: "5000", DegradedRate: 5}}
	return c
}
