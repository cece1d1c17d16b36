package loadgen

import (
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
)

// Config shapes the traffic.
type Config struct {
	// Tenants is how many tenants send traffic. Default 50.
	Tenants int
	// Rate is the total events/s outside spikes; 0 sends as fast as possible. Default 1000.
	Rate float64
	// Count stops after this many events; 0 means until Duration or ctx ends. Default 0.
	Count int
	// Duration stops after this long; 0 means no limit. Default 0.
	Duration time.Duration
	// Seed makes runs repeatable. Default 1.
	Seed uint64
	// ErrorRate is the share of failing requests. Default 0.01.
	ErrorRate float64
	// DayLength compresses one daily cycle into this long (0 disables the shape). Default 0.
	DayLength time.Duration
	// Noisy is the noisy tenant's id; empty means none. Default "".
	Noisy string
	// NoisyFactor multiplies the noisy tenant's rate during its spike. Default 5.
	NoisyFactor float64
	// SpikeAfter and SpikeFor place the spike from the start of Run. Defaults 30s and 2m.
	SpikeAfter, SpikeFor time.Duration
	// TenantPrefix names tenants prefix-0001 etc. Default "tenant".
	TenantPrefix string
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{Tenants: 50, Rate: 1000, Seed: 1, ErrorRate: 0.01, NoisyFactor: 5,
		SpikeAfter: 30 * time.Second, SpikeFor: 2 * time.Minute, TenantPrefix: "tenant"}
}

// Validate names every bad field.
func (c Config) Validate() error {
	var errs []error
	if c.Tenants < 1 || c.Tenants > 1_000_000 {
		errs = append(errs, errors.New("loadgen.tenants: must be 1 to 1000000"))
	}
	if c.Rate < 0 || c.Count < 0 || c.Duration < 0 {
		errs = append(errs, errors.New("loadgen.rate, count, duration: must be >= 0"))
	}
	if c.ErrorRate < 0 || c.ErrorRate > 1 {
		errs = append(errs, errors.New("loadgen.error_rate: must be 0 to 1"))
	}
	if c.Noisy != "" && !event.ValidTenantID(c.Noisy) {
		errs = append(errs, fmt.Errorf("loadgen.noisy: %q is not a valid tenant id", c.Noisy))
	}
	if c.NoisyFactor < 1 {
		errs = append(errs, errors.New("loadgen.noisy_factor: must be >= 1"))
	}
	if !event.ValidTenantID(c.TenantPrefix + "-1") {
		errs = append(errs, fmt.Errorf("loadgen.tenant_prefix: %q makes invalid tenant ids", c.TenantPrefix))
	}
	return errors.Join(errs...)
}

// Generator produces events. It is not safe for concurrent use.
type Generator struct {
	cfg     Config
	rng     *rand.Rand
	tenants []string
	cum     []float64 // cumulative weights, for picking a tenant
	noisy   int       // index of the noisy tenant, -1 if none
	idPre   string    // "lg-<seed>-<run>-": unique per generator
	seq     uint64
}

// NewGenerator builds a seeded generator.
func NewGenerator(cfg Config) (*Generator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// The seed repeats the traffic, never the ids: two runs with one seed
	// within JetStream's duplicate window would otherwise see the second
	// run's events silently discarded as duplicates of the first.
	var run [6]byte
	_, _ = crand.Read(run[:])
	g := &Generator{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)), noisy: -1,
		idPre: fmt.Sprintf("lg-%d-%s-", cfg.Seed, hex.EncodeToString(run[:]))}
	width := len(strconv.Itoa(cfg.Tenants))
	total := 0.0
	for i := 0; i < cfg.Tenants; i++ {
		id := fmt.Sprintf("%s-%0*d", cfg.TenantPrefix, width, i+1)
		w := 1 / math.Pow(float64(i+1), 0.8) // Zipf-like: a few big tenants, a long tail
		if cfg.Noisy != "" && i == cfg.Tenants/2 {
			id, g.noisy = cfg.Noisy, i
		}
		g.tenants = append(g.tenants, id)
		total += w
		g.cum = append(g.cum, total)
	}
	if cfg.Noisy != "" && g.noisy < 0 {
		g.tenants[0], g.noisy = cfg.Noisy, 0
	}
	return g, nil
}

// Tenants returns the tenant ids in weight order, heaviest first.
func (g *Generator) Tenants() []string { return g.tenants }

// NoisyShare is the noisy tenant's share of normal traffic.
func (g *Generator) NoisyShare() float64 {
	if g.noisy < 0 {
		return 0
	}
	prev := 0.0
	if g.noisy > 0 {
		prev = g.cum[g.noisy-1]
	}
	return (g.cum[g.noisy] - prev) / g.cum[len(g.cum)-1]
}

func (g *Generator) pickTenant() int {
	x := g.rng.Float64() * g.cum[len(g.cum)-1]
	lo, hi := 0, len(g.cum)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if g.cum[mid] < x {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

var routes = []string{"GET /v1/invoices", "POST /v1/invoices", "GET /v1/customers", "POST /v1/search", "GET /v1/reports"}
var models = []string{"gpt-4o", "gpt-4o-mini", "claude-sonnet", "llama-3-70b"}
var integrations = []string{"stripe", "slack", "github", "salesforce"}

// Event fills e with one event for tenant index ti at time now.
func (g *Generator) Event(e *event.Event, ti int, now time.Time) {
	g.seq++
	*e = event.Event{
		ID:       g.idPre + strconv.FormatUint(g.seq, 10),
		TenantID: g.tenants[ti],
		Time:     now,
		Quantity: 1,
		Service:  "loadgen",
	}
	r := g.rng.Float64()
	switch {
	case r < 0.60:
		e.Kind = event.KindAPIRequest
		e.Route = routes[g.rng.IntN(len(routes))]
		e.LatencyMs = math.Round(math.Exp(3+0.6*g.rng.NormFloat64())*10) / 10 // lognormal, median ~20ms
		e.StatusCode = 200
		if g.rng.Float64() < g.cfg.ErrorRate {
			e.StatusCode, e.Error = 500+g.rng.IntN(4), true
		}
		e.UserID = "u_" + strconv.Itoa(g.rng.IntN(1000))
	case r < 0.80:
		e.Kind = event.KindDBQuery
		e.LatencyMs = math.Round(math.Exp(1+0.8*g.rng.NormFloat64())*10) / 10
		e.Error = g.rng.Float64() < g.cfg.ErrorRate/2
	case r < 0.90:
		e.Kind = event.KindAITokens
		e.Quantity = float64(100 + g.rng.IntN(4000))
		e.Attrs = map[string]string{"model": models[g.rng.IntN(len(models))]}
		e.LatencyMs = math.Round(300+g.rng.ExpFloat64()*700) / 1
	case r < 0.94:
		e.Kind = event.KindWebhookCall
		e.Attrs = map[string]string{"integration": integrations[g.rng.IntN(len(integrations))]}
		e.LatencyMs = math.Round(math.Exp(4 + 0.5*g.rng.NormFloat64()))
		e.Error = g.rng.Float64() < g.cfg.ErrorRate*2
	case r < 0.97:
		e.Kind = event.KindComputeSeconds
		e.Quantity = math.Round(g.rng.ExpFloat64()*300) / 100
	case r < 0.99:
		e.Kind = event.KindJobRun
		e.LatencyMs = math.Round(g.rng.ExpFloat64() * 5000)
	default:
		e.Kind = event.KindStorageBytes
		e.Quantity = float64(g.rng.IntN(50 << 20))
	}
}

// dayFactor is the daily shape: quiet at night, busy in the afternoon.
func (g *Generator) dayFactor(elapsed time.Duration) float64 {
	if g.cfg.DayLength <= 0 {
		return 1
	}
	phase := 2 * math.Pi * float64(elapsed%g.cfg.DayLength) / float64(g.cfg.DayLength)
	return 1 + 0.5*math.Sin(phase-math.Pi/2)
}

// inSpike reports whether the noisy tenant is spiking at elapsed.
func (g *Generator) inSpike(elapsed time.Duration) bool {
	return g.noisy >= 0 && elapsed >= g.cfg.SpikeAfter && elapsed < g.cfg.SpikeAfter+g.cfg.SpikeFor
}
