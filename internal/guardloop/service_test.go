package guardloop

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/limiter"
)

// The "service": a separate process (this test binary re-executed with
// serviceEnv set) that embeds the limiter SDK and the emitter as a real
// service would. It serves the tenants' requests at their rates, asks
// Allow(tenant) for each, emits an api_request usage event for each allowed
// one, and reports its counts on stdout as JSON lines every second.
//
// Commands on stdin, one per line:
//
//	spike <tenant> <factor>   multiply the tenant's rate (acked with a line)
//	calm <tenant>             back to the normal rate (acked)

const (
	serviceEnv     = "GUARDLOOP_SERVICE"
	serviceNATSEnv = "GUARDLOOP_NATS_URL"
	serviceSeedEnv = "GUARDLOOP_SEED"
	serviceKeyEnv  = "GUARDLOOP_TRUSTED_KEY" // the daemon's public decisions key
)

// report is one line of the service's stdout: a periodic report (Ack
// empty) or the ack of a command.
type report struct {
	TimeMs int64 `json:"t_ms"`
	// Periodic report: cumulative counts since the service started.
	Allowed  map[string]int64 `json:"allowed,omitempty"`
	Rejected map[string]int64 `json:"rejected,omitempty"`
	// FirstReject is the time (unix ms) of each tenant's first rejection
	// since its last spike command (or since start).
	FirstReject map[string]int64 `json:"first_reject_ms,omitempty"`
	// Limited is the local rate the limiter enforces per tenant now
	// (tenants without a limit are absent).
	Limited map[string]float64 `json:"limited,omitempty"`
	// ShadowRejected is what the limiter would have rejected under shadow
	// decisions (tenantguard_limiter_shadow_rejected_total), per tenant.
	ShadowRejected map[string]float64 `json:"shadow_rejected,omitempty"`
	// UserRejected counts rejections per "tenant/user".
	UserRejected map[string]int64 `json:"user_rejected,omitempty"`
	Published    uint64           `json:"published,omitempty"`
	EmitError    string           `json:"emit_error,omitempty"`
	// Command ack.
	Ack    string  `json:"ack,omitempty"`
	Tenant string  `json:"tenant,omitempty"`
	Factor float64 `json:"factor,omitempty"`
}

// runService is the child's main; it returns the exit code.
func runService() int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "service:", err); return 3 }
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	nc, err := nats.Connect(os.Getenv(serviceNATSEnv), nats.Name("guardloop-service"), nats.MaxReconnects(-1))
	if err != nil {
		return fail(err)
	}
	defer nc.Close()
	lcfg := limiter.DefaultConfig()
	lcfg.TrustedKeys = []string{os.Getenv(serviceKeyEnv)}
	reg := prometheus.NewRegistry()
	lim, err := limiter.New(lcfg, limiter.Deps{Conn: nc, Registerer: reg, Logger: log})
	if err != nil {
		return fail(err)
	}
	defer lim.Close()
	runErr := make(chan error, 1)
	go func() { runErr <- lim.Run(ctx) }()
	ecfg := emit.DefaultConfig()
	ecfg.Service = "guardloop-svc"
	em, err := emit.New(nc, ecfg)
	if err != nil {
		return fail(err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = em.Close(cctx)
	}()

	cmds := make(chan []string, 16)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) > 0 {
				cmds <- f
			}
		}
		close(cmds) // the test went away: stop
	}()

	seed, _ := strconv.ParseUint(os.Getenv(serviceSeedEnv), 10, 64)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	loads := tenants()
	factor := make([]float64, len(loads))
	for i := range factor {
		factor[i] = 1
	}
	index := map[string]int{}
	for i, t := range loads {
		index[t.ID] = i
	}
	allowed := make([]int64, len(loads))
	rejected := make([]int64, len(loads))
	firstReject := make([]int64, len(loads))
	heavyUser := make([]string, len(loads)) // a user sending the spike's extra traffic alone
	userRejected := map[string]int64{}
	out := json.NewEncoder(os.Stdout)

	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	rep := time.NewTicker(time.Second)
	defer rep.Stop()
	last := time.Now()
	var ev event.Event
	for {
		select {
		case <-ctx.Done():
			return 0
		case err := <-runErr:
			if err != nil {
				return fail(fmt.Errorf("limiter: %w", err))
			}
			return 0
		case f, ok := <-cmds:
			if !ok {
				return 0
			}
			now := time.Now()
			if len(f) < 2 {
				return fail(fmt.Errorf("bad command %q", f))
			}
			i, known := index[f[1]]
			if !known {
				return fail(fmt.Errorf("unknown tenant %q", f[1]))
			}
			switch {
			case f[0] == "spike" && len(f) == 3:
				x, err := strconv.ParseFloat(f[2], 64)
				if err != nil || x < 1 {
					return fail(fmt.Errorf("bad factor %q", f[2]))
				}
				factor[i], firstReject[i], heavyUser[i] = x, 0, ""
			case f[0] == "spike-user" && len(f) == 4:
				x, err := strconv.ParseFloat(f[3], 64)
				if err != nil || x < 1 {
					return fail(fmt.Errorf("bad factor %q", f[3]))
				}
				factor[i], firstReject[i], heavyUser[i] = x, 0, f[2]
			case f[0] == "calm":
				factor[i], heavyUser[i] = 1, ""
			default:
				return fail(fmt.Errorf("bad command %q", f))
			}
			if err := out.Encode(report{TimeMs: now.UnixMilli(), Ack: f[0], Tenant: f[1], Factor: factor[i]}); err != nil {
				return fail(err)
			}
		case now := <-tick.C:
			dt := now.Sub(last).Seconds()
			last = now
			for i, t := range loads {
				normal := poisson(rng, t.Rate*dt)
				extra := poisson(rng, t.Rate*(factor[i]-1)*dt)
				for n := 0; n < normal+extra; n++ {
					user := randomUser(rng)
					if n >= normal && heavyUser[i] != "" {
						user = heavyUser[i]
					}
					if !lim.AllowUser(t.ID, user) {
						rejected[i]++
						userRejected[t.ID+"/"+user]++
						if firstReject[i] == 0 {
							firstReject[i] = time.Now().UnixMilli()
						}
						continue
					}
					allowed[i]++
					request(&ev, rng, t.ID, user, time.Now())
					if err := em.Emit(ctx, ev); err != nil {
						return fail(fmt.Errorf("emit: %w", err))
					}
				}
			}
		case now := <-rep.C:
			r := report{TimeMs: now.UnixMilli(), Allowed: map[string]int64{}, Rejected: map[string]int64{},
				FirstReject: map[string]int64{}, Limited: map[string]float64{}}
			for i, t := range loads {
				r.Allowed[t.ID], r.Rejected[t.ID] = allowed[i], rejected[i]
				if firstReject[i] != 0 {
					r.FirstReject[t.ID] = firstReject[i]
				}
				if lr, _, ok := lim.Limit(t.ID); ok {
					r.Limited[t.ID] = float64(lr)
				}
			}
			r.ShadowRejected = shadowRejected(reg)
			r.UserRejected = maps.Clone(userRejected)
			st := em.Stats()
			r.Published, r.EmitError = st.Published, st.LastError
			if err := out.Encode(r); err != nil {
				return fail(err)
			}
		}
	}
}

// shadowRejected reads tenantguard_limiter_shadow_rejected_total per tenant.
func shadowRejected(g prometheus.Gatherer) map[string]float64 {
	out := map[string]float64{}
	mfs, _ := g.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "tenantguard_limiter_shadow_rejected_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "tenant" {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}
