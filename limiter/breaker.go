package limiter

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// State of a circuit breaker.
type State int

// Breaker states.
const (
	StateClosed   State = iota // calls pass; outcomes are counted
	StateOpen                  // calls are rejected
	StateHalfOpen              // a few probe calls pass
)

func (s State) String() string {
	switch s {
	case StateClosed:
		return "closed"
	case StateOpen:
		return "open"
	case StateHalfOpen:
		return "half_open"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Sentinel errors; errors.Is works on the typed errors below.
var (
	ErrCircuitOpen = errors.New("limiter: circuit open")
	ErrThrottled   = errors.New("limiter: throttled")
)

// CircuitOpenError is returned when a circuit rejects a call.
type CircuitOpenError struct {
	Tenant, Integration string
	Forced              bool          // by an open_circuit decision, not the local error ratio
	RetryAfter          time.Duration // until the circuit may let calls through
}

func (e *CircuitOpenError) Error() string {
	by := "error ratio"
	if e.Forced {
		by = "decision"
	}
	return fmt.Sprintf("limiter: circuit open for tenant %s integration %s (by %s; retry after %s)",
		e.Tenant, e.Integration, by, e.RetryAfter.Round(time.Millisecond))
}

// Is makes errors.Is(err, ErrCircuitOpen) true.
func (e *CircuitOpenError) Is(target error) bool { return target == ErrCircuitOpen }

// Breakers holds one circuit breaker per tenant and integration. A breaker
// opens locally when, within the rolling window, at least MinRequests calls
// were made and the error ratio reached ErrorRatio; after OpenFor it goes
// half-open and admits HalfOpenProbes probes: that many successes close it,
// one failure re-opens it. An open_circuit decision forces it open until
// the decision expires or is cleared, regardless of the local state.
type Breakers struct {
	l         *Limiter
	cfg       BreakerConfig
	bucketDur int64
	seed      maphash.Seed
	n         atomic.Int64
	shards    [64]breakerShard
}

type bkey struct{ tenant, integration string }

type breakerShard struct {
	mu sync.RWMutex
	m  map[bkey]*breaker
	_  [32]byte
}

type breaker struct {
	mu        sync.Mutex
	state     State
	openUntil int64 // unix ns
	probes    int
	probeOK   int
	buckets   []outcomeBucket
	stats     *tenantStats
}

type outcomeBucket struct {
	epoch     int64
	ok, fails uint32
}

func newBreakers(l *Limiter, cfg BreakerConfig) *Breakers {
	b := &Breakers{l: l, cfg: cfg, bucketDur: int64(cfg.Window) / int64(cfg.Buckets), seed: maphash.MakeSeed()}
	if b.bucketDur <= 0 {
		b.bucketDur = 1
	}
	for i := range b.shards {
		b.shards[i].m = map[bkey]*breaker{}
	}
	return b
}

func (b *Breakers) get(tenant, integration string, create bool) *breaker {
	k := bkey{tenant, integration}
	sh := &b.shards[maphash.String(b.seed, tenant)%uint64(len(b.shards))]
	sh.mu.RLock()
	br := sh.m[k]
	sh.mu.RUnlock()
	if br != nil || !create || b.n.Load() >= int64(b.cfg.MaxBreakers) {
		return br
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if br = sh.m[k]; br == nil {
		br = &breaker{buckets: make([]outcomeBucket, b.cfg.Buckets), stats: b.l.stats.get(tenant)}
		sh.m[k] = br
		b.n.Add(1)
	}
	return br
}

// forced returns how long a pushed decision keeps the circuit open, and
// whether a scoped throttle rejects the call.
func (b *Breakers) forced(tenant, integration string, now time.Time) (open time.Duration, throttled bool, st *tenantStats) {
	t := b.l.snap.Load().tenants[tenant]
	if t == nil {
		return 0, false, nil
	}
	ns := now.UnixNano()
	if exp, ok := t.circuits[integration]; ok && ns < exp {
		return time.Duration(exp - ns), false, t.stats
	}
	if exp, ok := t.circuits[""]; ok && ns < exp {
		return time.Duration(exp - ns), false, t.stats
	}
	if exp, ok := t.shadowCircs[integration]; ok && ns < exp {
		t.stats.shadowRejected.Add(1)
	} else if exp, ok := t.shadowCircs[""]; ok && ns < exp {
		t.stats.shadowRejected.Add(1)
	}
	if s := t.integrations[integration]; s != nil && ns < s.expires && !s.allow(now, 1) {
		return 0, true, t.stats
	}
	return 0, false, t.stats
}

// Allow returns nil if a call of tenant to integration may proceed, a
// *CircuitOpenError if its circuit is open, or ErrThrottled if an
// integration-scoped throttle rejects it. Every allowed call must be
// followed by Report.
func (b *Breakers) Allow(tenant, integration string) error {
	now := time.Now()
	if d, throttled, st := b.forced(tenant, integration, now); d > 0 {
		st.circuitRejected.Add(1)
		return &CircuitOpenError{Tenant: tenant, Integration: integration, Forced: true, RetryAfter: d}
	} else if throttled {
		return ErrThrottled
	}
	br := b.get(tenant, integration, false)
	if br == nil {
		return nil
	}
	if d, ok := br.allow(now, b.cfg.HalfOpenProbes); !ok {
		br.stats.circuitRejected.Add(1)
		return &CircuitOpenError{Tenant: tenant, Integration: integration, RetryAfter: d}
	}
	return nil
}

// Report records the outcome of a call that Allow admitted. A nil err or
// context.Canceled counts as success (the caller gave up, the integration
// did not fail).
func (b *Breakers) Report(tenant, integration string, err error) {
	failed := err != nil && !errors.Is(err, context.Canceled)
	br := b.get(tenant, integration, true)
	if br == nil {
		return // MaxBreakers reached: this pair is not tracked
	}
	if br.report(time.Now(), failed, b) {
		b.l.metrics.incBreakerOpened()
		b.l.log.Warn("circuit opened", "tenant", tenant, "integration", integration)
	}
}

// Do calls fn if the circuit admits it, and reports its outcome.
func (b *Breakers) Do(ctx context.Context, tenant, integration string, fn func(context.Context) error) error {
	if err := b.Allow(tenant, integration); err != nil {
		return err
	}
	err := fn(ctx)
	b.Report(tenant, integration, err)
	return err
}

// State returns the circuit state of tenant and integration now; a
// decision-forced circuit reads open.
func (b *Breakers) State(tenant, integration string) State {
	now := time.Now()
	if d, _, _ := b.forced(tenant, integration, now); d > 0 {
		return StateOpen
	}
	br := b.get(tenant, integration, false)
	if br == nil {
		return StateClosed
	}
	br.mu.Lock()
	defer br.mu.Unlock()
	if br.state == StateOpen && now.UnixNano() >= br.openUntil {
		return StateHalfOpen
	}
	return br.state
}

func (br *breaker) allow(now time.Time, maxProbes int) (time.Duration, bool) {
	br.mu.Lock()
	defer br.mu.Unlock()
	ns := now.UnixNano()
	switch br.state {
	case StateClosed:
		return 0, true
	case StateOpen:
		if ns < br.openUntil {
			return time.Duration(br.openUntil - ns), false
		}
		br.state, br.probes, br.probeOK = StateHalfOpen, 0, 0
	}
	if br.probes < maxProbes {
		br.probes++
		return 0, true
	}
	return time.Second, false
}

// report records an outcome and reports whether the breaker just opened.
func (br *breaker) report(now time.Time, failed bool, b *Breakers) bool {
	br.mu.Lock()
	defer br.mu.Unlock()
	ns := now.UnixNano()
	switch br.state {
	case StateOpen:
		if ns < br.openUntil {
			return false // a call admitted before the circuit opened
		}
		br.state, br.probes, br.probeOK = StateHalfOpen, 0, 0
		fallthrough
	case StateHalfOpen:
		if failed {
			br.open(ns, b)
			return true
		}
		br.probeOK++
		if br.probeOK >= b.cfg.HalfOpenProbes {
			br.state = StateClosed
			clear(br.buckets)
		}
		return false
	}
	epoch := ns / b.bucketDur
	cur := &br.buckets[epoch%int64(len(br.buckets))]
	if cur.epoch != epoch {
		*cur = outcomeBucket{epoch: epoch}
	}
	if failed {
		cur.fails++
	} else {
		cur.ok++
	}
	var calls, fails uint64
	oldest := epoch - int64(len(br.buckets)) + 1
	for _, bk := range br.buckets {
		if bk.epoch >= oldest {
			calls += uint64(bk.ok) + uint64(bk.fails)
			fails += uint64(bk.fails)
		}
	}
	if failed && calls >= uint64(b.cfg.MinRequests) && float64(fails) >= b.cfg.ErrorRatio*float64(calls) {
		br.open(ns, b)
		return true
	}
	return false
}

func (br *breaker) open(ns int64, b *Breakers) {
	br.state = StateOpen
	br.openUntil = ns + int64(b.cfg.OpenFor)
	br.probes, br.probeOK = 0, 0
	clear(br.buckets)
}
