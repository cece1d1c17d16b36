package limiter

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
)

// ErrManualOverride is returned when an automatic decision (source anomaly
// or spend_cap) would overwrite or clear a live manual decision.
var ErrManualOverride = errors.New("limiter: a live manual decision outranks this automatic one")

// ErrNoSigner is returned by Put and Clear on a Publisher without a signing
// key: limiters ignore unsigned decisions.
var ErrNoSigner = errors.New("limiter: the publisher has no signing key (decisions.signing_key_file; create one with `tenantguard keygen`)")

// ErrExpiryTooFar is returned by Put for a decision that lasts longer than
// the publisher's cap for its source.
var ErrExpiryTooFar = errors.New("decision expires beyond the cap")

// minTombstone is the least a clear lasts in the bucket, so that limiters
// that are reconnecting still see it.
const minTombstone = time.Minute

// Publisher writes decisions into tenantguard_decisions. It is used by the
// daemon's decision engine and by the CLI. Every decision it writes is
// signed (WithSigner) for the KV key it is stored under.
//
// Precedence: a manual decision outranks automatic ones until it expires.
// Put and Clear with an automatic source read the current value and fail
// with ErrManualOverride while it is a live manual decision that verifies
// (signed by a trusted key, see WithTrustedKeys); the write is a
// compare-and-set on the revision read, so a manual decision that lands in
// between is never overwritten. A forged manual decision outranks nothing.
//
// A clear is written as a signed decision with action clear (a tombstone)
// that lasts at least as long as the decision it clears, never as a KV
// delete: a delete carries no signature, so limiters ignore deletes of
// live decisions. Sweep deletes tombstones once they expire.
type Publisher struct {
	kv        jetstream.KeyValue
	now       func() time.Time
	signer    *Signer
	trusted   []ed25519.PublicKey
	verifier  *Verifier
	maxManual time.Duration
	maxAuto   time.Duration
}

// PublisherOption configures a Publisher.
type PublisherOption func(*Publisher)

// WithSigner signs every decision written with s; its public key is
// trusted too. Without it Put and Clear fail with ErrNoSigner.
func WithSigner(s *Signer) PublisherOption { return func(p *Publisher) { p.signer = s } }

// WithTrustedKeys adds keys whose decisions verify (besides the signer's):
// a live manual decision outranks automatic ones only if it verifies, and
// List returns only decisions that verify.
func WithTrustedKeys(keys ...ed25519.PublicKey) PublisherOption {
	return func(p *Publisher) { p.trusted = append(p.trusted, keys...) }
}

// WithMaxTTL caps how long a decision may last: manual for source manual,
// automatic for anomaly and spend_cap. Defaults DefaultMaxManualTTL and
// DefaultMaxAutomaticTTL.
func WithMaxTTL(manual, automatic time.Duration) PublisherOption {
	return func(p *Publisher) { p.maxManual, p.maxAuto = manual, automatic }
}

// NewPublisher opens the decisions bucket as it is and returns a
// Publisher. It never creates or changes the bucket: a missing bucket is an
// error that says to start `tenantguard run` or run `tenantguard migrate`
// (errors.Is provision.ErrMissing); see EnsureBuckets.
func NewPublisher(ctx context.Context, nc *nats.Conn, opts ...PublisherOption) (*Publisher, error) {
	p := &Publisher{now: time.Now, maxManual: DefaultMaxManualTTL, maxAuto: DefaultMaxAutomaticTTL}
	for _, o := range opts {
		o(p)
	}
	if p.maxManual <= 0 || p.maxAuto <= 0 {
		return nil, errors.New("limiter: publisher caps must be > 0")
	}
	keys := append([]ed25519.PublicKey(nil), p.trusted...)
	if p.signer != nil {
		keys = append(keys, p.signer.PublicKey())
	}
	p.verifier = NewVerifier(keys, max(p.maxManual, p.maxAuto), false)
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := openBucket(ctx, js, event.DecisionsBucket)
	if err != nil {
		return nil, err
	}
	p.kv = kv
	return p, nil
}

// Verifier returns the verifier the publisher judges stored decisions with.
func (p *Publisher) Verifier() *Verifier { return p.verifier }

// maxTTL is the cap for a source.
func (p *Publisher) maxTTL(s Source) time.Duration {
	if s == SourceManual {
		return p.maxManual
	}
	return p.maxAuto
}

// CheckTTL returns ErrExpiryTooFar, naming the cap, when d lasts longer
// than the cap for its source, after issued_at or after now.
func (p *Publisher) CheckTTL(d Decision) error {
	limit := p.maxTTL(d.Source)
	if life := d.ExpiresAt.Sub(d.IssuedAt); life > limit {
		return fmt.Errorf("%w: it lasts %s, the cap for %s decisions is %s", ErrExpiryTooFar, life, d.Source, limit)
	}
	if d.ExpiresAt.After(p.now().Add(limit + capSkew)) {
		return fmt.Errorf("%w: it expires at %s, more than the cap for %s decisions (%s) from now",
			ErrExpiryTooFar, d.ExpiresAt.UTC().Format(time.RFC3339), d.Source, limit)
	}
	return nil
}

// Put validates d, refuses an expiry beyond the cap, signs d and stores it
// under its key; a clear decision writes a tombstone (see Clear). It
// returns the new revision.
func (p *Publisher) Put(ctx context.Context, d Decision) (uint64, error) {
	if p.signer == nil {
		return 0, ErrNoSigner
	}
	if d.Action == ActionClear {
		return p.putClear(ctx, d)
	}
	if err := d.Validate(); err != nil {
		return 0, err
	}
	if err := p.CheckTTL(d); err != nil {
		return 0, err
	}
	key, err := d.Key()
	if err != nil {
		return 0, err
	}
	val, err := json.Marshal(p.signer.Sign(key, d))
	if err != nil {
		return 0, err
	}
	if d.Source == SourceManual {
		return p.kv.Put(ctx, key, val)
	}
	for attempt := 0; ; attempt++ {
		rev, _, err := p.checkAutomatic(ctx, key)
		if err != nil {
			return 0, err
		}
		var nrev uint64
		if rev == 0 {
			nrev, err = p.kv.Create(ctx, key, val)
		} else {
			nrev, err = p.kv.Update(ctx, key, val, rev)
		}
		if err == nil {
			return nrev, nil
		}
		if !isConflict(err) || attempt >= 5 {
			return 0, fmt.Errorf("put decision %s: %w", key, err)
		}
	}
}

// Clear clears the tenant's decision for scope: see Put. An automatic
// source cannot clear a live manual decision, and clearing what is absent
// is a no-op for it. A manual clear is always written, so it also releases
// a decision that limiters still hold after its value was deleted.
func (p *Publisher) Clear(ctx context.Context, tenant, scope string, source Source) error {
	now := p.now().UTC().Truncate(time.Second)
	reason := "released"
	if source != SourceManual {
		reason = "cleared"
	}
	_, err := p.putClear(ctx, Decision{TenantID: tenant, Scope: scope, Action: ActionClear,
		IssuedAt: now, ExpiresAt: now.Add(minTombstone), Reason: reason, Source: source})
	return err
}

// putClear writes d, a clear, as a tombstone lasting as long as the
// decision it replaces (at least minTombstone, at most the source's cap),
// so a limiter that reconnects meanwhile still sees it. d's expires_at is
// set here.
func (p *Publisher) putClear(ctx context.Context, d Decision) (uint64, error) {
	if p.signer == nil {
		return 0, ErrNoSigner
	}
	if d.IssuedAt.IsZero() {
		d.IssuedAt = p.now().UTC().Truncate(time.Second)
	}
	d.ExpiresAt = d.IssuedAt.Add(minTombstone)
	if err := d.Validate(); err != nil {
		return 0, err
	}
	key, err := d.Key()
	if err != nil {
		return 0, err
	}
	limit := d.IssuedAt.Add(p.maxTTL(d.Source))
	for attempt := 0; ; attempt++ {
		var (
			rev uint64
			cur *Decision
		)
		if d.Source == SourceManual {
			rev, _, cur, err = p.current(ctx, key)
		} else {
			rev, cur, err = p.checkAutomatic(ctx, key)
		}
		if err != nil {
			return 0, err
		}
		switch {
		case cur != nil && cur.ExpiresAt.After(d.ExpiresAt):
			d.ExpiresAt = cur.ExpiresAt
		case cur == nil && d.Source == SourceManual:
			// Nothing readable in the bucket: a limiter may still hold a
			// decision whose value was deleted, for up to the cap.
			d.ExpiresAt = limit
		case cur == nil:
			return 0, nil // nothing of the engine's to clear
		}
		if d.ExpiresAt.After(limit) {
			d.ExpiresAt = limit
		}
		val, err := json.Marshal(p.signer.Sign(key, d))
		if err != nil {
			return 0, err
		}
		var nrev uint64
		switch {
		case d.Source == SourceManual:
			nrev, err = p.kv.Put(ctx, key, val)
		case rev == 0:
			nrev, err = p.kv.Create(ctx, key, val)
		default:
			nrev, err = p.kv.Update(ctx, key, val, rev)
		}
		if err == nil {
			return nrev, nil
		}
		if !isConflict(err) || attempt >= 5 {
			return 0, fmt.Errorf("clear decision %s: %w", key, err)
		}
	}
}

// current returns the revision of key (0 if it never existed), its value,
// and its decision when the value decodes and is not a clear; nil when
// absent, deleted, unreadable or a clear.
func (p *Publisher) current(ctx context.Context, key string) (uint64, []byte, *Decision, error) {
	e, err := p.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// Absent, or deleted: a delete marker has a revision to update.
		if e != nil {
			return e.Revision(), nil, nil, nil
		}
		return 0, nil, nil, nil
	}
	if err != nil {
		return 0, nil, nil, fmt.Errorf("get decision %s: %w", key, err)
	}
	if d, err := DecodeDecision(e.Value()); err == nil && d.Action != ActionClear {
		return e.Revision(), e.Value(), &d, nil
	}
	return e.Revision(), e.Value(), nil, nil
}

// checkAutomatic is current for an automatic write: it fails with
// ErrManualOverride while key holds a live manual decision that verifies.
// A forged or unverifiable one outranks nothing.
func (p *Publisher) checkAutomatic(ctx context.Context, key string) (uint64, *Decision, error) {
	rev, val, cur, err := p.current(ctx, key)
	if err != nil || cur == nil || cur.Source != SourceManual || !cur.Live(p.now()) {
		return rev, cur, err
	}
	if _, verr := p.verifier.Check(key, val, p.now()); verr != nil {
		return rev, cur, nil
	}
	return 0, nil, fmt.Errorf("%w (key %s, expires %s)", ErrManualOverride, key, cur.ExpiresAt.Format(time.RFC3339))
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) ||
		(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence)
}

// Get returns the stored decision for tenant and scope, live or not,
// without checking its signature. A clear reads as
// jetstream.ErrKeyNotFound, like a deleted key.
func (p *Publisher) Get(ctx context.Context, tenant, scope string) (Decision, error) {
	key, err := Key(tenant, scope)
	if err != nil {
		return Decision{}, err
	}
	e, err := p.kv.Get(ctx, key)
	if err != nil {
		return Decision{}, err
	}
	d, err := DecodeDecision(e.Value())
	if err == nil && d.Action == ActionClear {
		return Decision{}, jetstream.ErrKeyNotFound
	}
	return d, err
}

// Entry is one value of the decisions bucket, as the verifier judged it.
type Entry struct {
	Key      string
	Revision uint64
	// Decision holds the fields that could be read, all of them unless
	// Reject is RejectMalformed.
	Decision Decision
	// Reject is "" for a decision that verifies, else one of RejectReasons.
	Reject string
}

// Entries returns every value in the bucket with the verifier's verdict,
// sorted by key; expired ones (and expired clears) only when
// includeExpired.
func (p *Publisher) Entries(ctx context.Context, includeExpired bool) ([]Entry, error) {
	lister, err := p.kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list decisions: %w", err)
	}
	defer lister.Stop()
	now := p.now()
	var out []Entry
	for key := range lister.Keys() {
		e, err := p.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get decision %s: %w", key, err)
		}
		d, verr := p.verifier.Check(key, e.Value(), now)
		if !includeExpired && !d.Live(now) {
			continue
		}
		out = append(out, Entry{Key: key, Revision: e.Revision(), Decision: d, Reject: RejectReason(verr)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// List returns the stored decisions that verify and are not clears, sorted
// by tenant and scope; expired ones only when includeExpired. These are
// the decisions limiters with the same trusted keys apply.
func (p *Publisher) List(ctx context.Context, includeExpired bool) ([]Decision, error) {
	entries, err := p.Entries(ctx, includeExpired)
	if err != nil {
		return nil, err
	}
	var out []Decision
	for _, e := range entries {
		if e.Reject == "" && e.Decision.Action != ActionClear {
			out = append(out, e.Decision)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].TenantID != out[j].TenantID {
			return out[i].TenantID < out[j].TenantID
		}
		return out[i].Scope < out[j].Scope
	})
	return out, nil
}

// Sweep deletes expired decisions from the bucket and returns how many. A
// value replaced since it was read is left alone.
func (p *Publisher) Sweep(ctx context.Context) (int, error) {
	lister, err := p.kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return 0, nil
		}
		return 0, fmt.Errorf("list decisions: %w", err)
	}
	defer lister.Stop()
	now := p.now()
	n := 0
	for key := range lister.Keys() {
		e, err := p.kv.Get(ctx, key)
		if err != nil {
			continue
		}
		if d, err := DecodeDecision(e.Value()); err == nil && d.Live(now) {
			continue
		}
		if err := p.kv.Delete(ctx, key, jetstream.LastRevision(e.Revision())); err == nil {
			n++
		}
	}
	return n, nil
}
