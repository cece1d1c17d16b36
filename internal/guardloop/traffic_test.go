package guardloop

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
)

// The traffic model shared by the seeded history (written to ClickHouse by
// the test before the daemon starts) and the service child process: the
// same tenants and rates, so the live traffic continues the history.

const (
	numTenants = 20
	noisyID    = "noisy-co"
	// totalRate is the requests/s of all tenants together outside spikes.
	totalRate = 60.0
	// spikeFactor is the noisy tenant's rate multiplier during its spike.
	spikeFactor = 5.0
)

// tenantLoad is one tenant's normal request rate.
type tenantLoad struct {
	ID   string
	Rate float64 // requests per second
}

// tenants returns loadgen's shape for numTenants tenants: Zipf-like
// weights 1/(i+1)^0.8 scaled to totalRate, ids tenant-01..tenant-20, and
// the noisy tenant at index numTenants/2 (as loadgen places it). The noisy
// tenant gets about 1.4 requests/s (83 per minute).
func tenants() []tenantLoad {
	out := make([]tenantLoad, numTenants)
	sum := 0.0
	for i := range out {
		w := 1 / math.Pow(float64(i+1), 0.8)
		out[i] = tenantLoad{ID: fmt.Sprintf("tenant-%02d", i+1), Rate: w}
		sum += w
	}
	for i := range out {
		out[i].Rate *= totalRate / sum
	}
	out[numTenants/2].ID = noisyID
	return out
}

func rateOf(id string) float64 {
	for _, t := range tenants() {
		if t.ID == id {
			return t.Rate
		}
	}
	return 0
}

var routes = []string{"GET /v1/invoices", "POST /v1/invoices", "GET /v1/customers", "POST /v1/search"}

// randomUser is one of a tenant's 200 ordinary users.
func randomUser(rng *rand.Rand) string { return fmt.Sprintf("u_%d", rng.IntN(200)) }

// request fills e with one served API request of tenant's user at time at.
func request(e *event.Event, rng *rand.Rand, tenant, user string, at time.Time) {
	*e = event.Event{
		TenantID:   tenant,
		Kind:       event.KindAPIRequest,
		Time:       at,
		Quantity:   1,
		Service:    "guardloop-svc",
		Route:      routes[rng.IntN(len(routes))],
		UserID:     user,
		LatencyMs:  math.Round(math.Exp(3+0.5*rng.NormFloat64())*10) / 10, // lognormal, median ~20 ms
		StatusCode: 200,
	}
}

// poisson draws a Poisson count with mean lambda (small lambdas: the
// service draws every 10 ms).
func poisson(rng *rand.Rand, lambda float64) int {
	if lambda <= 0 {
		return 0
	}
	if lambda > 30 {
		return max(0, int(math.Round(lambda+math.Sqrt(lambda)*rng.NormFloat64())))
	}
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}
