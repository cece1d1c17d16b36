package limiter

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// ErrShed is returned by Wait when a shed decision rejects the tenant.
var ErrShed = errors.New("limiter: tenant is shed")

// ErrNoTrustedKeys is returned by New for a limiter that would follow the
// decisions bucket without a key to verify decisions with.
var ErrNoTrustedKeys = errors.New("limiter: no trusted decision keys: set limiter.Config.TrustedKeys " +
	"to the public key `tenantguard keygen` printed for the daemon and the CLI, " +
	"or set limiter.Config.InsecureAcceptUnsigned to apply unsigned decisions " +
	"that anyone with write access to the bucket can forge")

// Deps are the clients and hooks a Limiter uses. All are optional.
type Deps struct {
	// Conn is the NATS connection to watch decisions and heartbeat on. Nil
	// makes a local-only limiter: defaults and Apply only.
	Conn *nats.Conn
	// Registerer receives the SDK metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// PlanOf maps a tenant to its plan for Config.Plans; nil means every
	// tenant gets Config.DefaultRatePerSec.
	PlanOf func(tenant string) string
}

// Limiter enforces per-tenant rates and circuits. Allow, AllowN, Wait,
// Check and the Breakers are safe for concurrent use and never do I/O;
// Run keeps the decisions current from NATS in the background.
type Limiter struct {
	cfg       Config
	deps      Deps
	log       *slog.Logger
	id        string
	unlimited bool // no default limit for any tenant

	snap      atomic.Pointer[snapshot]
	instances atomic.Int64

	verifier   *Verifier                 // checks decisions from the bucket
	rejected   *rejectLog                // rate-limits the log lines about rejected decisions
	rejectedBy map[string]*atomic.Uint64 // by reject reason; the map is never written after New

	mu        sync.Mutex                     // guards the fields below; never taken by the hot path
	decisions map[string]Decision            // by KV key
	byTenant  map[string]map[string]Decision // tenant -> scope -> decision
	lastRev   uint64
	expiryC   chan struct{}

	defaults [defaultShards]defaultShard
	defaultN atomic.Int64
	overflow *limitState // shared default bucket past MaxDefaultTenants
	seed     maphash.Seed
	banks    creditBanks // burst credits by tenant
	// hasCredits: some plan has burst credits.
	hasCredits bool
	breakers   *Breakers
	stats      *statsRegistry
	metrics    *metrics
	closeOnce  sync.Once
	closed     chan struct{}
	runDone    chan struct{}
	running    atomic.Bool

	// onApply, when set by tests, is called after a snapshot is published.
	onApply func(keys []string)
}

const defaultShards = 64

type defaultShard struct {
	mu sync.RWMutex
	m  map[string]*limitState
	_  [32]byte
}

// snapshot is immutable once published: the hot path reads it lock-free.
type snapshot struct {
	tenants map[string]*tenantState
}

// tenantState is a tenant's live decisions. Immutable; the *rate.Limiter
// inside a limitState is reused across snapshots so tokens carry over.
type tenantState struct {
	all          limitState // inline: one pointer chase less on the hot path
	hasAll       bool
	routes       map[string]*limitState // route -> limit
	users        map[string]*limitState // user id -> limit, on top of the tenant's
	integrations map[string]*limitState // integration -> throttle/shed
	circuits     map[string]int64       // integration ("" = all) -> forced open until, unix ns
	shadowCircs  map[string]int64       // the same for shadow open_circuit decisions: counted, not forced
	stats        *tenantStats
}

// limitState is one token bucket with its cluster-wide settings. A shadow
// state takes tokens as an enforced one would, but allows every request
// and counts the ones it would have rejected.
type limitState struct {
	lim         *rate.Limiter
	shed        bool
	unlimited   bool
	shadow      bool
	credits     *credits // the tenant's burst credits, spent before a rejection; nil: none
	expires     int64    // unix ns; math.MaxInt64 for defaults
	globalRate  float64
	globalBurst int
	stats       *tenantStats
}

// New returns a Limiter; call Run to follow decisions and Close to leave.
func New(cfg Config, deps Deps) (*Limiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := resolveGroup(&cfg); err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	keys, err := ParsePublicKeys("limiter.Config.TrustedKeys", cfg.TrustedKeys)
	if err != nil {
		return nil, err
	}
	if deps.Conn != nil && len(keys) == 0 && !cfg.InsecureAcceptUnsigned {
		return nil, ErrNoTrustedKeys
	}
	id := cfg.InstanceID
	if id == "" {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("instance id: %w", err)
		}
		id = hex.EncodeToString(b[:])
	}
	l := &Limiter{
		cfg:        cfg,
		deps:       deps,
		log:        deps.Logger.With("component", "limiter"),
		id:         id,
		decisions:  map[string]Decision{},
		byTenant:   map[string]map[string]Decision{},
		expiryC:    make(chan struct{}, 1),
		seed:       maphash.MakeSeed(),
		stats:      newStatsRegistry(cfg.MaxTenantSeries),
		closed:     make(chan struct{}),
		runDone:    make(chan struct{}),
		verifier:   NewVerifier(keys, cfg.MaxDecisionTTL, cfg.InsecureAcceptUnsigned),
		rejected:   &rejectLog{every: 10 * time.Second},
		rejectedBy: map[string]*atomic.Uint64{},
	}
	for _, r := range RejectReasons {
		l.rejectedBy[r] = new(atomic.Uint64)
	}
	if cfg.InsecureAcceptUnsigned && deps.Conn != nil {
		l.log.Warn("limiter.Config.InsecureAcceptUnsigned is set: unsigned decisions from the bucket are applied, " +
			"so anyone who can write to it can throttle, shed or release any tenant")
	}
	l.unlimited = cfg.DefaultRatePerSec == 0
	for _, p := range cfg.Plans {
		if p.RatePerSec > 0 {
			l.unlimited = false
		}
	}
	l.banks.m = map[string]*credits{}
	for _, p := range cfg.Plans {
		if p.BurstCredits.enabled() {
			l.hasCredits = true
		}
	}
	l.instances.Store(1)
	for i := range l.defaults {
		l.defaults[i].m = map[string]*limitState{}
	}
	l.overflow = l.newState(cfg.DefaultRatePerSec, burstOf(cfg.DefaultRatePerSec, cfg.DefaultBurst), math.MaxInt64, false, l.stats.get(overflowLabel))
	l.snap.Store(&snapshot{tenants: map[string]*tenantState{}})
	l.breakers = newBreakers(l, cfg.Breaker)
	if deps.Registerer != nil {
		m, err := newMetrics(l, deps.Registerer)
		if err != nil {
			return nil, err
		}
		l.metrics = m
	}
	return l, nil
}

// ID returns this instance's presence id.
func (l *Limiter) ID() string { return l.id }

// Instances returns the number of live instances the global rates are split by.
func (l *Limiter) Instances() int { return int(l.instances.Load()) }

// Breakers returns the circuit breakers.
func (l *Limiter) Breakers() *Breakers { return l.breakers }

// Do runs fn through the tenant's circuit breaker for integration; see Breakers.Do.
func (l *Limiter) Do(ctx context.Context, tenant, integration string, fn func(context.Context) error) error {
	return l.breakers.Do(ctx, tenant, integration, fn)
}

// Allow reports whether one request of tenant may proceed now. A tenant
// without a decision and without a default limit costs one atomic load and
// one map lookup.
func (l *Limiter) Allow(tenant string) bool {
	t := l.snap.Load().tenants[tenant]
	if t == nil && l.unlimited {
		return true
	}
	return l.allowSlow(t, tenant, time.Now(), 1)
}

// AllowN reports whether n requests of tenant may proceed at now.
func (l *Limiter) AllowN(tenant string, now time.Time, n int) bool {
	t := l.snap.Load().tenants[tenant]
	if t == nil && l.unlimited {
		return true
	}
	return l.allowSlow(t, tenant, now, n)
}

// AllowUser reports whether one request of user (may be empty) of tenant
// may proceed now: a user-scoped decision applies on top of the tenant's,
// and the stricter wins. The user's bucket is asked first, so a user it
// rejects takes no tokens from the tenant's other users.
func (l *Limiter) AllowUser(tenant, user string) bool {
	t := l.snap.Load().tenants[tenant]
	if t == nil && l.unlimited {
		return true
	}
	now := time.Now()
	if s := t.liveUser(user, now); s != nil {
		if ok := s.allow(now, 1); !ok {
			return false
		}
	}
	return l.allowSlow(t, tenant, now, 1)
}

func (t *tenantState) liveUser(user string, now time.Time) *limitState {
	if t == nil || t.users == nil || user == "" {
		return nil
	}
	if s := t.users[user]; s != nil && now.UnixNano() < s.expires {
		return s
	}
	return nil
}

// HasUserDecisions reports whether tenant has a live user-scoped decision,
// so a caller that must work to learn a request's user can skip it.
func (l *Limiter) HasUserDecisions(tenant string) bool {
	t := l.snap.Load().tenants[tenant]
	return t != nil && len(t.users) > 0
}

func (l *Limiter) allowSlow(t *tenantState, tenant string, now time.Time, n int) bool {
	if s := t.liveAll(now); s != nil {
		// A shadow decision only counts; the default limit still applies.
		if ok := s.allow(now, n); !s.shadow {
			return ok
		}
	}
	if l.unlimited {
		return true
	}
	return l.defaultState(tenant).allow(now, n)
}

func (t *tenantState) liveAll(now time.Time) *limitState {
	if t == nil || !t.hasAll || now.UnixNano() >= t.all.expires {
		return nil
	}
	return &t.all
}

// state returns the bucket that governs tenant at now, or nil if
// unlimited. A live shadow decision counts one request (shadowed) and does
// not govern.
func (l *Limiter) state(tenant string, now time.Time, shadowed bool) *limitState {
	if s := l.snap.Load().tenants[tenant].liveAll(now); s != nil {
		if !s.shadow {
			return s
		}
		if shadowed {
			s.allow(now, 1)
		}
	}
	if l.unlimited {
		return nil
	}
	s := l.defaultState(tenant)
	if s.unlimited {
		return nil
	}
	return s
}

// Wait blocks until tenant may proceed or ctx ends. It returns ErrShed at
// once for a shed tenant, and the rate.Limiter error when the wait would
// outlast ctx's deadline.
func (l *Limiter) Wait(ctx context.Context, tenant string) error {
	s := l.state(tenant, time.Now(), true)
	if s == nil {
		return ctx.Err()
	}
	if s.shed {
		s.stats.throttled.Add(1)
		return ErrShed
	}
	if err := s.lim.Wait(ctx); err != nil {
		s.stats.throttled.Add(1)
		return err
	}
	s.stats.allowed.Add(1)
	return nil
}

// Result is the outcome of Check, with what the RateLimit headers need.
type Result struct {
	Allowed    bool
	Limited    bool          // a limit applies to the tenant (else the rest is zero)
	Shed       bool          // a shed decision rejected it
	Limit      int           // this instance's burst
	Remaining  int           // whole tokens left after this request
	Reset      time.Duration // until the bucket is full again
	RetryAfter time.Duration // until a rejected request could pass; 0 if allowed

	// ClusterLimit and ClusterRate are the cluster-wide burst and rate per
	// second, before the split among instances; RateLimit-Limit reports
	// ClusterLimit. Zero for a shed tenant.
	ClusterLimit int
	ClusterRate  float64
}

// Check is AllowN(tenant, now, 1) that also applies a route-scoped decision
// (route may be empty) and reports the bucket state, for HTTP headers.
//
// A shadow decision never rejects and adds no headers: it takes its tokens
// and counts what it would have rejected, and the limits that are enforced
// decide.
func (l *Limiter) Check(tenant, route string, now time.Time) Result {
	return l.CheckUser(tenant, route, "", now)
}

// CheckUser is Check that also applies a user-scoped decision of user (may
// be empty) on top of the tenant's; the stricter wins. The user's bucket
// is asked first, so a user it rejects takes no tokens from the tenant.
func (l *Limiter) CheckUser(tenant, route, user string, now time.Time) Result {
	t := l.snap.Load().tenants[tenant]
	var ures *Result
	if s := t.liveUser(user, now); s != nil {
		if s.shadow {
			s.allow(now, 1)
		} else {
			r := s.check(now)
			if !r.Allowed {
				return r
			}
			ures = &r
		}
	}
	res := Result{Allowed: true}
	if s := t.liveAll(now); s != nil && !s.shadow {
		res = s.check(now)
	} else {
		if s != nil {
			s.allow(now, 1)
		}
		if !l.unlimited {
			if s := l.defaultState(tenant); !s.unlimited {
				res = s.check(now)
			}
		}
	}
	if res.Allowed && route != "" && t != nil {
		if s := t.routes[route]; s != nil && now.UnixNano() < s.expires {
			res = stricter(res, s, now)
		}
	}
	if ures != nil && res.Allowed && (!res.Limited || ures.Remaining < res.Remaining) {
		res = *ures
	}
	return res
}

// stricter applies the scoped bucket s on top of res, an allowed result,
// and returns the stricter of the two: s's when it rejects, or when it
// leaves fewer tokens. A shadow s only counts.
func stricter(res Result, s *limitState, now time.Time) Result {
	if s.shadow {
		s.allow(now, 1)
		return res
	}
	r := s.check(now)
	if !r.Allowed || !res.Limited || r.Remaining < res.Remaining {
		return r
	}
	return res
}

func (s *limitState) allow(now time.Time, n int) bool {
	if s.unlimited {
		return true
	}
	if !s.shed && s.lim.AllowN(now, n) {
		if !s.shadow {
			s.stats.allowed.Add(1)
		}
		return true
	}
	if s.shadow {
		s.stats.shadowRejected.Add(1)
		return true
	}
	if !s.shed && s.credits.spend(now, n) {
		s.stats.creditsSpent.Add(uint64(n))
		s.stats.allowed.Add(1)
		return true
	}
	s.stats.throttled.Add(1)
	return false
}

func (s *limitState) check(now time.Time) Result {
	if s.unlimited {
		return Result{Allowed: true}
	}
	res := Result{Limited: true}
	if !s.shed {
		res.ClusterLimit, res.ClusterRate = s.globalBurst, s.globalRate
	}
	untilExpiry := time.Duration(0)
	if s.expires != math.MaxInt64 {
		untilExpiry = time.Duration(s.expires - now.UnixNano())
	}
	if s.shed {
		s.stats.throttled.Add(1)
		res.Shed = true
		res.RetryAfter, res.Reset = untilExpiry, untilExpiry
		return res
	}
	res.Allowed = s.lim.AllowN(now, 1)
	if !res.Allowed && s.credits.spend(now, 1) {
		s.stats.creditsSpent.Add(1)
		res.Allowed = true
	}
	tokens := s.lim.TokensAt(now)
	r, b := float64(s.lim.Limit()), s.lim.Burst()
	res.Limit = b
	res.Remaining = max(0, int(math.Floor(tokens)))
	if r > 0 {
		res.Reset = time.Duration((float64(b) - tokens) / r * float64(time.Second))
		if !res.Allowed {
			res.RetryAfter = time.Duration((1 - tokens) / r * float64(time.Second))
		}
	} else {
		res.Reset = untilExpiry
		if !res.Allowed {
			res.RetryAfter = untilExpiry
		}
	}
	if res.Allowed {
		s.stats.allowed.Add(1)
	} else {
		s.stats.throttled.Add(1)
	}
	return res
}

// Limit returns the local rate and burst that govern tenant now, and false
// when the tenant is unlimited.
func (l *Limiter) Limit(tenant string) (rate.Limit, int, bool) {
	s := l.state(tenant, time.Now(), false)
	if s == nil {
		return rate.Inf, 0, false
	}
	if s.shed {
		return 0, 0, true
	}
	return s.lim.Limit(), s.lim.Burst(), true
}

// Decision returns the live decision for tenant and scope, if any.
func (l *Limiter) Decision(tenant, scope string) (Decision, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d, ok := l.byTenant[tenant][scope]
	if !ok || !d.Live(time.Now()) {
		return Decision{}, false
	}
	return d, true
}

// burstOf is the cluster-wide burst for a rate: burst, or max(1, ceil(rate))
// when burst is 0 and the rate is positive.
func burstOf(r float64, burst int) int {
	if burst > 0 || r == 0 {
		return burst
	}
	return max(1, int(math.Ceil(r)))
}

// split divides a cluster-wide rate and burst among n instances. The local
// burst is floored so the cluster-wide burst never exceeds the configured
// one, but stays at least 1 when the global burst is positive.
func split(globalRate float64, globalBurst, n int) (rate.Limit, int) {
	if n < 1 {
		n = 1
	}
	b := globalBurst / n
	if b < 1 && globalBurst > 0 {
		b = 1
	}
	return rate.Limit(globalRate / float64(n)), b
}

func (l *Limiter) localN() int {
	if !l.cfg.SplitGlobal {
		return 1
	}
	return int(l.instances.Load())
}

func (l *Limiter) newState(globalRate float64, globalBurst int, expires int64, shed bool, st *tenantStats) *limitState {
	s := &limitState{shed: shed, expires: expires, globalRate: globalRate, globalBurst: globalBurst, stats: st}
	if !shed {
		r, b := split(globalRate, globalBurst, l.localN())
		s.lim = rate.NewLimiter(r, b)
	}
	return s
}

// defaultState returns the default bucket of a tenant without a decision.
func (l *Limiter) defaultState(tenant string) *limitState {
	sh := &l.defaults[maphash.String(l.seed, tenant)%defaultShards]
	sh.mu.RLock()
	s := sh.m[tenant]
	sh.mu.RUnlock()
	if s != nil {
		return s
	}
	r, b := l.cfg.DefaultRatePerSec, l.cfg.DefaultBurst
	if l.deps.PlanOf != nil {
		if p, ok := l.cfg.Plans[l.deps.PlanOf(tenant)]; ok {
			r, b = p.RatePerSec, p.Burst
		}
	}
	if l.defaultN.Load() >= int64(l.cfg.MaxDefaultTenants) {
		return l.overflow
	}
	var ns *limitState
	if r == 0 {
		ns = &limitState{unlimited: true, expires: math.MaxInt64}
	} else {
		ns = l.newState(r, burstOf(r, b), math.MaxInt64, false, l.stats.get(tenant))
		ns.credits = l.creditsFor(tenant)
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s := sh.m[tenant]; s != nil {
		return s
	}
	sh.m[tenant] = ns
	l.defaultN.Add(1)
	return ns
}

// setInstances re-splits every bucket when the live instance count changes.
func (l *Limiter) setInstances(n int) {
	if n < 1 {
		n = 1
	}
	if int(l.instances.Swap(int64(n))) == n || !l.cfg.SplitGlobal {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.resplitLocked()
}

func (l *Limiter) resplitLocked() {
	n := l.localN()
	re := func(s *limitState) {
		if s == nil || s.shed || s.unlimited {
			return
		}
		r, b := split(s.globalRate, s.globalBurst, n)
		s.lim.SetLimit(r)
		s.lim.SetBurst(b)
	}
	for _, t := range l.snap.Load().tenants {
		if t.hasAll {
			re(&t.all)
		}
		for _, s := range t.routes {
			re(s)
		}
		for _, s := range t.integrations {
			re(s)
		}
		for _, s := range t.users {
			re(s)
		}
	}
	for i := range l.defaults {
		sh := &l.defaults[i]
		sh.mu.RLock()
		for _, s := range sh.m {
			re(s)
		}
		sh.mu.RUnlock()
	}
	re(l.overflow)
	l.resplitCredits(n)
}

// Close stops Run, deletes this instance's presence key and unregisters
// nothing (the caller owns the Registerer). It is idempotent.
func (l *Limiter) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	if l.running.Load() {
		<-l.runDone
	}
	return nil
}
