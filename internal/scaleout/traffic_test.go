package scaleout

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/event"
)

// The traffic model, shared by the seeded history (written to ClickHouse
// before the replicas start) and the live traffic: the same tenants, rates
// and latencies, so the live traffic continues the history.
const (
	numTenants = 20
	noisyID    = "noisy-co"
	// totalRate is the api_request events/s of all tenants together
	// outside the spike.
	totalRate = 200.0
	// spikeFactor is the noisy tenant's rate multiplier during its spike.
	spikeFactor = 5.0
	// computeShare: each tenant also sends compute_seconds events at this
	// share of its request rate, priced, for the billing export.
	computeShare = 0.1
	// partitions is collector.partitions in the replicas' config.
	partitions = 16
)

// tenantLoad is one tenant's normal request rate.
type tenantLoad struct {
	ID   string
	Rate float64 // api_request events per second
}

// tenants returns loadgen's shape for numTenants tenants: weights
// 1/(i+1)^0.8 scaled to totalRate, ids tenant-01..tenant-20, the noisy
// tenant at index numTenants/2 (about 4.2 events/s) and the capped tenant
// at index 5 (about 6.8 events/s).
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
	out[5].ID = cappedID()
	return out
}

// cappedID is the capped tenant's id: the first capped-<n> that falls in
// the noisy tenant's partition, so that one replica owns both and the
// SIGKILL of that replica hands both over at once.
func cappedID() string {
	want := event.Partition(noisyID, partitions)
	for n := 1; ; n++ {
		id := "capped-" + strconv.Itoa(n)
		if event.Partition(id, partitions) == want {
			return id
		}
	}
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

// latencyMs draws a request latency: uniform over [10, 30) ms in steps of
// 0.1 ms, as the seeded history's SQL does.
func latencyMs(rng *rand.Rand) float64 { return 10 + float64(rng.IntN(200))/10 }

// computeMilli draws a compute_seconds quantity in thousandths of a
// second: uniform over [0.5, 2.5), as the seeded history's SQL does.
func computeMilli(rng *rand.Rand) int64 { return 500 + int64(rng.IntN(2000)) }

// poisson draws a Poisson count with mean lambda (small lambdas: the
// traffic draws every 10 ms).
func poisson(rng *rand.Rand, lambda float64) int {
	if lambda <= 0 {
		return 0
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

// sent is what the traffic emitted for one tenant and kind.
type sent struct {
	Events int64
	Milli  int64 // sum of quantities in thousandths
}

// traffic emits the tenants' events through an emitter, as a service
// would: Poisson arrivals every 10 ms, ids <tenant>-<kind>-<n>.
type traffic struct {
	em     *emit.Emitter
	mu     sync.Mutex
	factor map[string]float64
	sent   map[string]map[string]sent // tenant -> kind -> counts
	err    error
	cancel context.CancelFunc
	done   chan struct{}
}

func startTraffic(em *emit.Emitter, seed uint64) *traffic {
	ctx, cancel := context.WithCancel(context.Background())
	tr := &traffic{em: em, factor: map[string]float64{}, sent: map[string]map[string]sent{}, cancel: cancel, done: make(chan struct{})}
	go tr.run(ctx, seed)
	return tr
}

func (tr *traffic) setFactor(tenant string, f float64) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.factor[tenant] = f
}

// stop ends the traffic and returns what was emitted, or the first emit
// error.
func (tr *traffic) stop() (map[string]map[string]sent, error) {
	tr.cancel()
	<-tr.done
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.sent, tr.err
}

func (tr *traffic) run(ctx context.Context, seed uint64) {
	defer close(tr.done)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	loads := tenants()
	seq := map[string]int{}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			dt := now.Sub(last).Seconds()
			last = now
			for _, tl := range loads {
				tr.mu.Lock()
				f := tr.factor[tl.ID]
				tr.mu.Unlock()
				if f == 0 {
					f = 1
				}
				for range poisson(rng, tl.Rate*f*dt) {
					e := event.Event{TenantID: tl.ID, Kind: event.KindAPIRequest, Time: time.Now(), Quantity: 1,
						Route: routes[rng.IntN(len(routes))], UserID: "u_" + strconv.Itoa(rng.IntN(200)),
						LatencyMs: latencyMs(rng), StatusCode: 200}
					if !tr.emit(ctx, e, seq, 1000) {
						return
					}
				}
				for range poisson(rng, tl.Rate*computeShare*dt) {
					milli := computeMilli(rng)
					e := event.Event{TenantID: tl.ID, Kind: event.KindComputeSeconds, Time: time.Now(),
						Quantity: float64(milli) / 1000, UserID: "u_" + strconv.Itoa(rng.IntN(200))}
					if !tr.emit(ctx, e, seq, milli) {
						return
					}
				}
			}
		}
	}
}

// emit sends one event and counts it; false when the traffic must stop.
func (tr *traffic) emit(ctx context.Context, e event.Event, seq map[string]int, milli int64) bool {
	key := e.TenantID + "-" + e.Kind
	seq[key]++
	e.ID = key + "-" + strconv.Itoa(seq[key])
	if err := tr.em.Emit(ctx, e); err != nil {
		if ctx.Err() == nil {
			tr.mu.Lock()
			tr.err = fmt.Errorf("emit %s: %w", e.ID, err)
			tr.mu.Unlock()
		}
		return false
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.sent[e.TenantID] == nil {
		tr.sent[e.TenantID] = map[string]sent{}
	}
	s := tr.sent[e.TenantID][e.Kind]
	s.Events++
	s.Milli += milli
	tr.sent[e.TenantID][e.Kind] = s
	return true
}
