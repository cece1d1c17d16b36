// Package sim generates seeded synthetic per-minute tenant traffic with
// known injected anomalies, and scores the anomaly detector on it.
//
// The traffic has tenants from 0.5 to 500 events per minute (log-uniform),
// daily and weekly seasonality (weekend dips), slow growth, over-dispersed
// (negative binomial) noise, injected 3x usage spikes of 30 min to 4 h,
// P95 latency doublings, error-rate bursts, and +30% level shifts that
// must not alert. Generate writes rollups in minute order (CSV through
// WriteCSV); Evaluate replays them through anomaly.Replayer, the daemon's
// detector code, and scores per volume band.
package sim

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/tenantguard/tenantguard/anomaly"
)

// Config of the generator.
type Config struct {
	Seed       uint64
	Tenants    int       // default 300
	Days       int       // default 21
	WarmupDays int       // not scored: the detector learns; default 7
	Start      time.Time // default Monday 2026-01-05 00:00 UTC
	MinRate    float64   // events per minute, log-uniform; default 0.5
	MaxRate    float64   // events per minute; default 500
	// SpikeEvery is the mean number of scored days between two 3x spikes
	// of one tenant; default 4.
	SpikeEvery float64
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{Seed: 1, Tenants: 300, Days: 21, WarmupDays: 7,
		Start: time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC), MinRate: 0.5, MaxRate: 500, SpikeEvery: 4}
}

// Spike durations: 3x usage spikes last 30 minutes to 4 hours.
const (
	SpikeMin = 30 * time.Minute
	SpikeMax = 4 * time.Hour
)

// Injection types.
const (
	InjSpike   = "spike"   // usage (and cost) x3
	InjLatency = "latency" // P95 x2
	InjErrors  = "errors"  // error ratio to 10%
	InjShift   = "shift"   // +30% level from Start on, must not alert
)

// Injection is one anomaly put into the traffic.
type Injection struct {
	Tenant string
	Type   string
	Start  time.Time
	End    time.Time // zero for a shift (permanent)
	Factor float64
}

// Tenant is one synthetic tenant.
type Tenant struct {
	ID      string
	Rate    float64 // mean events per minute before seasonality
	dayAmp  float64
	phase   float64
	weekend float64
	growth  float64 // per 30 days
	shape   float64 // negative binomial k: var = mu + mu^2/k
	errRate float64
	p95     float64 // ms
	inj     []Injection
}

// Truth is what was generated.
type Truth struct {
	Config     Config
	Tenants    []*Tenant
	Injections []Injection
}

func (c *Config) fill() {
	d := DefaultConfig()
	if c.Tenants == 0 {
		c.Tenants = d.Tenants
	}
	if c.Days == 0 {
		c.Days = d.Days
	}
	if c.Start.IsZero() {
		c.Start = d.Start
	}
	if c.MinRate == 0 {
		c.MinRate = d.MinRate
	}
	if c.MaxRate == 0 {
		c.MaxRate = d.MaxRate
	}
	if c.SpikeEvery == 0 {
		c.SpikeEvery = d.SpikeEvery
	}
}

// plan draws tenants and injections.
func plan(cfg Config) *Truth {
	r := rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
	tr := &Truth{Config: cfg}
	scoredFrom := cfg.Start.Add(time.Duration(cfg.WarmupDays) * 24 * time.Hour)
	end := cfg.Start.Add(time.Duration(cfg.Days) * 24 * time.Hour)
	span := end.Sub(scoredFrom)
	for i := 0; i < cfg.Tenants; i++ {
		t := &Tenant{
			ID:      fmt.Sprintf("t%03d", i),
			Rate:    cfg.MinRate * math.Pow(cfg.MaxRate/cfg.MinRate, r.Float64()),
			dayAmp:  0.3 + 0.5*r.Float64(),
			phase:   24 * r.Float64(),
			weekend: 1,
			growth:  0.15 * r.Float64(),
			shape:   8 * math.Pow(10, r.Float64()),
			errRate: 0.001 + 0.02*r.Float64(),
			p95:     20 + 400*r.Float64(),
		}
		if r.Float64() < 0.7 {
			t.weekend = 0.4 + 0.45*r.Float64()
		}
		// Non-overlapping injections in the scored period, 8 h apart.
		var busy [][2]time.Time
		free := func(s, e time.Time) bool {
			for _, b := range busy {
				if s.Before(b[1].Add(8*time.Hour)) && e.After(b[0].Add(-8*time.Hour)) {
					return false
				}
			}
			return true
		}
		add := func(typ string, n int, minD, maxD time.Duration, factor float64) {
			for k := 0; k < n; k++ {
				d := time.Duration(float64(minD) * math.Pow(float64(maxD)/float64(minD), r.Float64())).Truncate(time.Minute)
				for try := 0; try < 20 && span > d+time.Hour; try++ {
					s := scoredFrom.Add(time.Duration(r.Int64N(int64(span - d - time.Hour)))).Truncate(time.Minute)
					if free(s, s.Add(d)) {
						busy = append(busy, [2]time.Time{s, s.Add(d)})
						t.inj = append(t.inj, Injection{Tenant: t.ID, Type: typ, Start: s, End: s.Add(d), Factor: factor})
						break
					}
				}
			}
		}
		days := span.Hours() / 24
		add(InjSpike, Poisson(r, days/cfg.SpikeEvery), SpikeMin, SpikeMax, 3)
		add(InjLatency, Poisson(r, days/7), 15*time.Minute, 2*time.Hour, 2)
		add(InjErrors, Poisson(r, days/10), 20*time.Minute, 90*time.Minute, 0.10)
		if r.Float64() < 0.3 && span > 24*time.Hour {
			s := scoredFrom.Add(time.Duration(r.Int64N(int64(span - 24*time.Hour)))).Truncate(time.Minute)
			if free(s, s.Add(24*time.Hour)) {
				busy = append(busy, [2]time.Time{s, s.Add(24 * time.Hour)})
				t.inj = append(t.inj, Injection{Tenant: t.ID, Type: InjShift, Start: s, Factor: 1.3})
			}
		}
		tr.Tenants = append(tr.Tenants, t)
		tr.Injections = append(tr.Injections, t.inj...)
	}
	return tr
}

// Generate draws the traffic and calls emit for every rollup, minute by
// minute (the Rollup is reused between calls).
func Generate(cfg Config, emit func(*anomaly.Rollup)) *Truth {
	cfg.fill()
	tr := plan(cfg)
	r := rand.New(rand.NewPCG(cfg.Seed, 0xdada))
	minutes := cfg.Days * 1440
	var ro anomaly.Rollup
	for m := 0; m < minutes; m++ {
		at := cfg.Start.Add(time.Duration(m) * time.Minute)
		hour := float64(m%1440) / 60
		dow := (m / 1440) % 7 // Start is a Monday
		for _, t := range tr.Tenants {
			mu := t.Rate * (1 + t.dayAmp*math.Sin(2*math.Pi*(hour-t.phase)/24))
			if dow >= 5 {
				mu *= t.weekend
			}
			mu *= math.Pow(1+t.growth, float64(m)/(30*1440))
			p95, errRate := t.p95, t.errRate
			for _, in := range t.inj {
				if at.Before(in.Start) || (!in.End.IsZero() && !at.Before(in.End)) {
					continue
				}
				switch in.Type {
				case InjSpike, InjShift:
					mu *= in.Factor
				case InjLatency:
					p95 *= in.Factor
				case InjErrors:
					errRate = in.Factor
				}
			}
			// Negative binomial: Poisson with a gamma-distributed mean.
			n := Poisson(r, mu*Gamma(r, t.shape)/t.shape)
			ro = anomaly.Rollup{Minute: at, TenantID: t.ID, Kind: "api_request", Count: uint64(n), Quantity: float64(n)}
			if n > 0 {
				ro.Errors = uint64(Poisson(r, float64(n)*errRate))
				ro.Cost = float64(n) * 0.002
				// Sampling spread of a P95 from n samples of a lognormal
				// with sigma 0.6, plus 3% window-to-window drift.
				sd := 0.03 + 0.6*2.12/math.Sqrt(float64(n))
				ro.LatencyP95 = p95 * math.Exp(sd*r.NormFloat64())
			}
			emit(&ro)
		}
	}
	return tr
}

// WriteCSV generates the traffic as rollup CSV (the replay format, plus a
// cost column) and returns the truth.
func WriteCSV(w io.Writer, cfg Config) (*Truth, error) {
	bw := bufio.NewWriterSize(w, 1<<16)
	bw.WriteString("minute,tenant_id,kind,count,quantity,errors,latency_p95_ms,cost\n")
	var buf []byte
	tr := Generate(cfg, func(r *anomaly.Rollup) {
		buf = buf[:0]
		buf = strconv.AppendInt(buf, r.Minute.Unix(), 10)
		buf = append(buf, ',')
		buf = append(buf, r.TenantID...)
		buf = append(buf, ',')
		buf = append(buf, r.Kind...)
		buf = append(buf, ',')
		buf = strconv.AppendUint(buf, r.Count, 10)
		buf = append(buf, ',')
		buf = strconv.AppendFloat(buf, r.Quantity, 'f', -1, 64)
		buf = append(buf, ',')
		buf = strconv.AppendUint(buf, r.Errors, 10)
		buf = append(buf, ',')
		if r.LatencyP95 > 0 {
			buf = strconv.AppendFloat(buf, r.LatencyP95, 'f', 2, 64)
		}
		buf = append(buf, ',')
		buf = strconv.AppendFloat(buf, r.Cost, 'f', 4, 64)
		buf = append(buf, '\n')
		bw.Write(buf)
	})
	return tr, bw.Flush()
}

// Poisson draws a Poisson variate (Knuth below 30, normal above).
func Poisson(r *rand.Rand, lambda float64) int {
	switch {
	case !(lambda > 0):
		return 0
	case lambda < 30:
		l, k, p := math.Exp(-lambda), 0, 1.0
		for {
			p *= r.Float64()
			if p <= l {
				return k
			}
			k++
		}
	default:
		return max(0, int(math.Round(lambda+math.Sqrt(lambda)*r.NormFloat64())))
	}
}

// Gamma draws Gamma(shape, 1) (Marsaglia and Tsang; shape >= 1).
func Gamma(r *rand.Rand, shape float64) float64 {
	d := shape - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := r.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := r.Float64()
		if u < 1-0.0331*x*x*x*x || math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return d * v
		}
	}
}
