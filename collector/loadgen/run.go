package loadgen

import (
	"context"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
)

// Emitter is what Run sends through; *emit.Emitter satisfies it.
type Emitter interface {
	Emit(ctx context.Context, e event.Event) error
}

// Progress is reported about once a second and at the end.
type Progress struct {
	Sent, Failed uint64
	Elapsed      time.Duration
	Rate         float64 // events/s over the last report interval
	Spiking      bool
}

// Run emits events until Count or Duration is reached or ctx ends. It calls
// progress (if not nil) about every second and once at the end.
func (g *Generator) Run(ctx context.Context, em Emitter, progress func(Progress)) (Progress, error) {
	start := time.Now()
	var p Progress
	lastSent, lastReport := uint64(0), start
	tick := 10 * time.Millisecond
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	var ev event.Event
	credit := 0.0
	report := func(now time.Time) {
		p.Elapsed = now.Sub(start)
		if dt := now.Sub(lastReport).Seconds(); dt > 0 {
			p.Rate = float64(p.Sent-lastSent) / dt
		}
		p.Spiking = g.inSpike(p.Elapsed)
		lastSent, lastReport = p.Sent, now
		if progress != nil {
			progress(p)
		}
	}
	for {
		now := time.Now()
		elapsed := now.Sub(start)
		if (g.cfg.Duration > 0 && elapsed >= g.cfg.Duration) || (g.cfg.Count > 0 && int(p.Sent+p.Failed) >= g.cfg.Count) {
			report(now)
			return p, nil
		}
		n := 1000 // unpaced: send in chunks between checks
		if g.cfg.Rate > 0 {
			select {
			case <-ctx.Done():
				report(time.Now())
				return p, nil
			case <-ticker.C:
			}
			rate := g.cfg.Rate * g.dayFactor(elapsed)
			if g.inSpike(elapsed) {
				rate += g.cfg.Rate * g.NoisyShare() * (g.cfg.NoisyFactor - 1)
			}
			credit += rate * tick.Seconds()
			n = int(credit)
			credit -= float64(n)
		}
		spiking := g.inSpike(elapsed)
		extra := g.NoisyShare() * (g.cfg.NoisyFactor - 1) // noisy tenant's extra share during the spike
		for i := 0; i < n; i++ {
			if g.cfg.Count > 0 && int(p.Sent+p.Failed) >= g.cfg.Count {
				break
			}
			ti := g.pickTenant()
			if spiking && g.rng.Float64() < extra/(1+extra) {
				ti = g.noisy
			}
			g.Event(&ev, ti, now)
			if err := em.Emit(ctx, ev); err != nil {
				if ctx.Err() != nil {
					report(time.Now())
					return p, nil
				}
				p.Failed++
				continue
			}
			p.Sent++
		}
		if time.Since(lastReport) >= time.Second {
			report(time.Now())
		}
		if ctx.Err() != nil {
			report(time.Now())
			return p, nil
		}
	}
}
