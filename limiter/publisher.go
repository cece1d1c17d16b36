package limiter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrManualOverride is returned when an automatic decision (source anomaly
// or spend_cap) would overwrite or clear a live manual decision.
var ErrManualOverride = errors.New("limiter: a live manual decision outranks this automatic one")

// Publisher writes decisions into tenantguard_decisions. It is used by the
// daemon's decision engine and by the CLI.
//
// Precedence: a manual decision outranks automatic ones until it expires.
// Put and Clear with an automatic source read the current value and fail
// with ErrManualOverride while it is a live manual decision; the write is a
// compare-and-set on the revision read, so a manual decision that lands in
// between is never overwritten.
type Publisher struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// NewPublisher creates or updates the decisions bucket, creates the
// presence bucket if it is missing (presenceTTL is its max age), and returns
// a Publisher.
func NewPublisher(ctx context.Context, nc *nats.Conn, presenceTTL time.Duration) (*Publisher, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, DecisionsBucketConfig())
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", DecisionsBucketConfig().Bucket, err)
	}
	if presenceTTL <= 0 {
		presenceTTL = DefaultConfig().PresenceTTL
	}
	if _, err := openBucket(ctx, js, PresenceBucketConfig(presenceTTL)); err != nil {
		return nil, err
	}
	return &Publisher{kv: kv, now: time.Now}, nil
}

// Put validates d and stores it under its key; a clear decision deletes the
// key (see Clear). It returns the new revision.
func (p *Publisher) Put(ctx context.Context, d Decision) (uint64, error) {
	if err := d.Validate(); err != nil {
		return 0, err
	}
	if d.Action == ActionClear {
		return 0, p.Clear(ctx, d.TenantID, d.Scope, d.Source)
	}
	key, err := d.Key()
	if err != nil {
		return 0, err
	}
	val, err := json.Marshal(d)
	if err != nil {
		return 0, err
	}
	if d.Source == SourceManual {
		return p.kv.Put(ctx, key, val)
	}
	for attempt := 0; ; attempt++ {
		rev, err := p.checkAutomatic(ctx, key)
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

// Clear deletes the tenant's decision for scope. An automatic source
// cannot clear a live manual decision.
func (p *Publisher) Clear(ctx context.Context, tenant, scope string, source Source) error {
	key, err := Key(tenant, scope)
	if err != nil {
		return err
	}
	if source == SourceManual {
		return p.kv.Delete(ctx, key)
	}
	for attempt := 0; ; attempt++ {
		rev, err := p.checkAutomatic(ctx, key)
		if err != nil {
			return err
		}
		if rev == 0 {
			return nil // nothing to clear
		}
		err = p.kv.Delete(ctx, key, jetstream.LastRevision(rev))
		if err == nil {
			return nil
		}
		if !isConflict(err) || attempt >= 5 {
			return fmt.Errorf("clear decision %s: %w", key, err)
		}
	}
}

// checkAutomatic returns the revision an automatic write must replace (0 if
// the key is absent or deleted), or ErrManualOverride.
func (p *Publisher) checkAutomatic(ctx context.Context, key string) (uint64, error) {
	e, err := p.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// Absent, or deleted: a delete marker has a revision to update.
		if e != nil {
			return e.Revision(), nil
		}
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("get decision %s: %w", key, err)
	}
	if cur, derr := DecodeDecision(e.Value()); derr == nil && cur.Source == SourceManual && cur.Live(p.now()) {
		return 0, fmt.Errorf("%w (key %s, expires %s)", ErrManualOverride, key, cur.ExpiresAt.Format(time.RFC3339))
	}
	return e.Revision(), nil
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) ||
		(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence)
}

// Get returns the stored decision for tenant and scope, live or not.
func (p *Publisher) Get(ctx context.Context, tenant, scope string) (Decision, error) {
	key, err := Key(tenant, scope)
	if err != nil {
		return Decision{}, err
	}
	e, err := p.kv.Get(ctx, key)
	if err != nil {
		return Decision{}, err
	}
	return DecodeDecision(e.Value())
}

// List returns the stored decisions, sorted by tenant and scope; expired
// ones only when includeExpired. Undecodable values are skipped.
func (p *Publisher) List(ctx context.Context, includeExpired bool) ([]Decision, error) {
	lister, err := p.kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list decisions: %w", err)
	}
	defer lister.Stop()
	now := p.now()
	var out []Decision
	for key := range lister.Keys() {
		e, err := p.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get decision %s: %w", key, err)
		}
		d, err := DecodeDecision(e.Value())
		if err != nil || (!includeExpired && !d.Live(now)) {
			continue
		}
		out = append(out, d)
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
