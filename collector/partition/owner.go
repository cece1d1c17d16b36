package partition

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/provision"
)

// Bucket is the KV bucket of the leases.
const Bucket = "tenantguard_partitions"

// Slots starts and stops the consumption of a slot. Slot numbers run from 0
// to Config.Partitions; Config.Partitions itself is the strays slot.
type Slots interface {
	// Start begins consuming the slots, whose leases are held when it is
	// called, and returns the error of each slot it could not start.
	Start(ctx context.Context, slots []int) map[int]error
	// Stop ends the consumption of slot and returns once its in-flight
	// messages are acked or left unacked for redelivery.
	Stop(ctx context.Context, slot int) error
}

// Config tunes ownership.
type Config struct {
	// Partitions of the usage stream; slots are the partitions plus the
	// strays slot. Default 16.
	Partitions int
	// LeaseTTL is how long a lease or a heartbeat lives unrenewed. Default 5s.
	LeaseTTL time.Duration
	// Replicas of the bucket in a NATS cluster. Default 1.
	Replicas int
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{Partitions: 16, LeaseTTL: 5 * time.Second, Replicas: 1}
}

// Validate names every bad field.
func (c Config) Validate() error {
	var errs []error
	if c.Partitions < 1 || c.Partitions > event.MaxPartitions {
		errs = append(errs, fmt.Errorf("collector.partitions: must be 1 to %d", event.MaxPartitions))
	}
	if c.LeaseTTL < 2*time.Second || c.LeaseTTL > 5*time.Minute {
		errs = append(errs, errors.New("collector.lease_ttl: must be 2s to 5m"))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, errors.New("collector.stream.replicas: must be 1 to 5"))
	}
	return errors.Join(errs...)
}

// Deps are the owner's collaborators.
type Deps struct {
	JetStream jetstream.JetStream
	Registry  prometheus.Registerer
	Logger    *slog.Logger
}

// Owner claims, renews and releases slot leases for one replica.
type Owner struct {
	cfg   Config
	js    jetstream.JetStream
	id    string
	log   *slog.Logger
	owned prometheus.Gauge

	mu   sync.Mutex
	held map[int]*lease // slots whose lease this replica holds
	kv   jetstream.KeyValue
}

// lease is a held slot's last revision and last successful renewal.
type lease struct {
	rev     uint64
	renewed time.Time
	lost    bool // the keeper found it taken or expired
}

// New checks cfg and builds an owner with a fresh replica id: the host
// name and a random suffix. Run starts it.
func New(cfg Config, d Deps) (*Owner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.JetStream == nil {
		return nil, errors.New("partition: JetStream is required")
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	id, err := replicaID()
	if err != nil {
		return nil, err
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tenantguard_partitions_owned",
		Help: "Slots of the usage stream this replica holds the lease of and consumes: partitions, plus the strays slot.",
	})
	if err := d.Registry.Register(g); err != nil {
		return nil, fmt.Errorf("partition metrics: %w", err)
	}
	return &Owner{cfg: cfg, js: d.JetStream, id: id, owned: g, held: map[int]*lease{},
		log: d.Logger.With("component", "partition", "replica", id)}, nil
}

// replicaID is the host name, made a valid key token, and 8 random hex digits.
func replicaID() (string, error) {
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, host)
	if len(host) > 48 {
		host = host[:48]
	}
	if host == "" {
		host = "replica"
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("replica id: %w", err)
	}
	return host + "-" + hex.EncodeToString(b[:]), nil
}

// ID is this replica's id, as in its members key and its leases' values.
func (o *Owner) ID() string { return o.id }

// Held returns the slots this replica holds, in order.
func (o *Owner) Held() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]int, 0, len(o.held))
	for s := range o.held {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// Slots is the number of slots: the partitions and the strays slot.
func (o *Owner) Slots() int { return o.cfg.Partitions + 1 }

// SlotKey is the lease key of slot: slot.<i>, or slot.strays.
func (o *Owner) SlotKey(slot int) string {
	if slot == o.cfg.Partitions {
		return "slot.strays"
	}
	return "slot." + strconv.Itoa(slot)
}

func (o *Owner) memberKey() string { return "members." + o.id }

// BucketConfig is the KV config of the leases bucket for cfg.
func BucketConfig(cfg Config) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "tenantguard partition leases: members.<replica> heartbeats, slot.<i> owners",
		History:     1,
		TTL:         cfg.LeaseTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	}
}

// EnsureBucket creates or updates the leases bucket, never lowering an
// existing bucket's replica count (see internal/provision). Only `run` and
// `migrate` call it.
func EnsureBucket(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.KeyValue, error) {
	if _, err := provision.Bucket(ctx, js, BucketConfig(cfg)); err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, Bucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", Bucket, err)
	}
	return kv, nil
}

// Run creates the bucket, joins, and keeps this replica's share of slots
// until ctx ends; then it stops every held slot, releases its leases and
// leaves. It returns nil on cancel, or the first error of slots.Start or
// slots.Stop that is not ctx's.
func (o *Owner) Run(ctx context.Context, slots Slots) error {
	every := o.cfg.LeaseTTL / 3
	for {
		kv, err := EnsureBucket(ctx, o.js, o.cfg)
		if err == nil {
			o.mu.Lock()
			o.kv = kv
			o.mu.Unlock()
			break
		}
		o.log.Warn("leases bucket; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
	keeperCtx, stopKeeper := context.WithCancel(context.WithoutCancel(ctx))
	keeperDone := make(chan struct{})
	wake := make(chan struct{}, 1)
	go func() {
		defer close(keeperDone)
		o.keep(keeperCtx, every, wake)
	}()
	defer func() {
		stopKeeper()
		<-keeperDone
	}()
	o.log.Info("joined", "count", o.Slots())
	t := time.NewTicker(every)
	defer t.Stop()
	var runErr error
	for runErr == nil {
		if err := o.reconcile(ctx, slots); err != nil && ctx.Err() == nil {
			runErr = err
			break
		}
		select {
		case <-ctx.Done():
		case <-t.C:
			continue
		case <-wake:
			continue
		}
		break
	}
	o.leave(slots)
	return runErr
}

// keep heartbeats and renews every held lease each period, until ctx ends.
// A lease found taken or expired, or not renewed for a whole TTL, is lost:
// it wakes the reconciler, which stops the slot.
func (o *Owner) keep(ctx context.Context, every time.Duration, wake chan<- struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		o.renew(ctx, wake)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (o *Owner) renew(ctx context.Context, wake chan<- struct{}) {
	o.mu.Lock()
	kv := o.kv
	o.mu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, o.cfg.LeaseTTL/3)
	defer cancel()
	if _, err := kv.Put(rctx, o.memberKey(), []byte(o.id)); err != nil && ctx.Err() == nil {
		o.log.Warn("heartbeat", "err", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	lostAny := false
	for slot, l := range o.held {
		if l.lost {
			continue
		}
		rev, err := kv.Update(rctx, o.SlotKey(slot), []byte(o.id), l.rev)
		switch {
		case err == nil:
			l.rev, l.renewed = rev, time.Now()
			continue
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound):
			l.lost = true
		case time.Since(l.renewed) >= o.cfg.LeaseTTL:
			l.lost = true // may have expired, and been claimed, meanwhile
		default:
			if ctx.Err() == nil {
				o.log.Warn("renew lease", "slot", slot, "err", err)
			}
			continue
		}
		o.log.Warn("lease lost", "slot", slot, "err", err)
		lostAny = true
	}
	if lostAny {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
}

// reconcile stops lost slots, releases extras and claims free slots until
// this replica holds its share.
func (o *Owner) reconcile(ctx context.Context, slots Slots) error {
	o.mu.Lock()
	kv := o.kv
	var lost []int
	for slot, l := range o.held {
		if l.lost {
			lost = append(lost, slot)
		}
	}
	o.mu.Unlock()
	for _, slot := range lost {
		if err := o.stop(ctx, slots, slot, false); err != nil {
			return err
		}
	}
	members, err := o.members(ctx, kv)
	if err != nil {
		if ctx.Err() == nil {
			o.log.Warn("list members", "err", err)
		}
		return nil
	}
	target := (o.Slots() + members - 1) / members
	order := o.preference()
	held := o.Held()
	if extra := len(held) - target; extra > 0 {
		// Give up the slots this replica likes least, so that each keeps
		// its favourites and replicas do not trade slots back and forth.
		rank := make(map[int]int, len(order))
		for i, s := range order {
			rank[s] = i
		}
		slices.SortFunc(held, func(a, b int) int { return cmp.Compare(rank[b], rank[a]) })
		for _, slot := range held[:extra] {
			if err := o.stop(ctx, slots, slot, true); err != nil {
				return err
			}
		}
		return nil
	}
	need := target - len(held)
	var claimed []int
	for _, slot := range order {
		if need <= 0 || ctx.Err() != nil {
			break
		}
		o.mu.Lock()
		_, mine := o.held[slot]
		o.mu.Unlock()
		if mine {
			continue
		}
		rev, err := kv.Create(ctx, o.SlotKey(slot), []byte(o.id))
		if err != nil {
			if !errors.Is(err, jetstream.ErrKeyExists) && ctx.Err() == nil {
				o.log.Warn("claim lease", "slot", slot, "err", err)
			}
			continue
		}
		o.mu.Lock()
		o.held[slot] = &lease{rev: rev, renewed: time.Now()}
		o.owned.Set(float64(len(o.held)))
		o.mu.Unlock()
		o.log.Info("claimed", "slot", slot, "members", members, "target", target)
		claimed = append(claimed, slot)
		need--
	}
	if len(claimed) == 0 {
		return nil
	}
	// The claimed slots start together: their tenants are handed over,
	// and warm-started, in one go.
	for slot, err := range slots.Start(ctx, claimed) {
		if ctx.Err() != nil {
			return nil
		}
		o.log.Warn("start slot; releasing its lease", "slot", slot, "err", err)
		o.drop(slot, true)
	}
	return nil
}

// stop stops a held slot, then drops its lease: deleted when release is
// set (a handover), left to expire when the lease was lost.
func (o *Owner) stop(ctx context.Context, slots Slots, slot int, release bool) error {
	if err := slots.Stop(ctx, slot); err != nil && ctx.Err() == nil {
		return fmt.Errorf("stop slot %d: %w", slot, err)
	}
	o.drop(slot, release)
	if release {
		o.log.Info("released", "slot", slot)
	}
	return nil
}

// drop forgets a held slot, deleting its lease at the last revision when
// release is set.
func (o *Owner) drop(slot int, release bool) {
	o.mu.Lock()
	l, ok := o.held[slot]
	delete(o.held, slot)
	o.owned.Set(float64(len(o.held)))
	kv := o.kv
	o.mu.Unlock()
	if !ok || !release || l.lost {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.cfg.LeaseTTL/3)
	defer cancel()
	if err := kv.Delete(ctx, o.SlotKey(slot), jetstream.LastRevision(l.rev)); err != nil {
		o.log.Warn("release lease; it expires by itself", "slot", slot, "err", err)
	}
}

// leave stops every held slot, releases their leases and deletes the
// heartbeat, so the other replicas take over without waiting for the TTL.
func (o *Owner) leave(slots Slots) {
	ctx, cancel := context.WithTimeout(context.Background(), o.cfg.LeaseTTL)
	defer cancel()
	for _, slot := range o.Held() {
		// The caller's context has ended: Stop leaves in-flight messages
		// unacked, to be redelivered to the next owner.
		_ = slots.Stop(ctx, slot)
		o.drop(slot, true)
	}
	o.mu.Lock()
	kv := o.kv
	o.mu.Unlock()
	if err := kv.Delete(ctx, o.memberKey()); err != nil {
		o.log.Warn("leave", "err", err)
	}
	o.log.Info("left")
}

// members counts the live heartbeats, this replica's included.
func (o *Owner) members(ctx context.Context, kv jetstream.KeyValue) (int, error) {
	lctx, cancel := context.WithTimeout(ctx, o.cfg.LeaseTTL/3)
	defer cancel()
	l, err := kv.ListKeysFiltered(lctx, "members.>")
	if err != nil {
		return 0, err
	}
	n, self := 0, false
	for k := range l.Keys() {
		n++
		self = self || k == o.memberKey()
	}
	_ = l.Stop() // the list has ended: Stop has nothing left to stop
	if !self {
		n++ // the heartbeat is not written yet, or expired
	}
	return n, nil
}

// preference is this replica's order of the slots: by a hash of its id and
// the slot, so replicas that claim at the same moment try different slots.
func (o *Owner) preference() []int {
	order := make([]int, o.Slots())
	score := make([]uint32, o.Slots())
	for s := range order {
		order[s] = s
		h := fnv.New32a()
		_, _ = h.Write([]byte(o.id + "/" + strconv.Itoa(s)))
		score[s] = h.Sum32()
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(score[a], score[b]) })
	return order
}

// Close releases nothing: Run gives up the leases when its context ends. It
// is safe to call any number of times.
func (o *Owner) Close() error { return nil }
