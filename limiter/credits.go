package limiter

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// BurstCredits lets a plan's tenants bank unused capacity: credits accrue
// at AccruePerSec up to Max, and a request that the tenant's limit
// rejects spends one credit instead, while there are any. Both are
// cluster-wide and split among the group's instances like rates.
type BurstCredits struct {
	// AccruePerSec is how many credits accrue per second. Default 0: none.
	AccruePerSec float64 `mapstructure:"accrue_per_sec"`
	// Max caps the banked credits. Default 0: none.
	Max int `mapstructure:"max"`
}

func (c BurstCredits) enabled() bool { return c.AccruePerSec > 0 && c.Max > 0 }

// credits is one tenant's bank on this instance: a token bucket that fills
// at the accrual rate up to the max, and that the hot path only touches on
// a request the tenant's limit rejects.
type credits struct {
	lim          *rate.Limiter
	globalAccrue float64
	globalMax    int
}

// creditBanks holds the banks of the tenants whose plan has credits.
type creditBanks struct {
	mu sync.Mutex
	m  map[string]*credits
}

// creditsFor returns tenant's bank, creating it full, or nil when its plan
// has no credits.
func (l *Limiter) creditsFor(tenant string) *credits {
	if l.deps.PlanOf == nil || !l.hasCredits {
		return nil
	}
	bc := l.cfg.Plans[l.deps.PlanOf(tenant)].BurstCredits
	if !bc.enabled() {
		return nil
	}
	l.banks.mu.Lock()
	defer l.banks.mu.Unlock()
	if c := l.banks.m[tenant]; c != nil {
		return c
	}
	if len(l.banks.m) >= l.cfg.MaxDefaultTenants {
		return nil
	}
	r, b := split(bc.AccruePerSec, bc.Max, l.localN())
	c := &credits{lim: rate.NewLimiter(r, b), globalAccrue: bc.AccruePerSec, globalMax: bc.Max}
	l.banks.m[tenant] = c
	return c
}

// spend takes n credits at now if the bank holds them.
func (c *credits) spend(now time.Time, n int) bool { return c != nil && c.lim.AllowN(now, n) }

// resplitCredits re-splits every bank; l.mu is held.
func (l *Limiter) resplitCredits(n int) {
	l.banks.mu.Lock()
	defer l.banks.mu.Unlock()
	for _, c := range l.banks.m {
		r, b := split(c.globalAccrue, c.globalMax, n)
		c.lim.SetLimit(r)
		c.lim.SetBurst(b)
	}
}

// creditSums returns the credits remaining now, summed by metric label.
func (l *Limiter) creditSums(now time.Time) map[string]float64 {
	l.banks.mu.Lock()
	defer l.banks.mu.Unlock()
	out := make(map[string]float64, len(l.banks.m))
	for tenant, c := range l.banks.m {
		out[l.stats.get(tenant).label] += max(0, c.lim.TokensAt(now))
	}
	return out
}
