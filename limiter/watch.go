package limiter

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
)

// Run follows the decisions bucket, heartbeats presence and expires
// decisions locally until ctx ends or Close is called; it returns nil then.
// NATS being down never fails Run: it retries, and the hot path keeps the
// last known decisions until they expire.
func (l *Limiter) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return errors.New("limiter: Run called twice")
	}
	defer close(l.runDone)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-l.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	if l.deps.Conn == nil {
		l.expiryLoop(ctx)
		return nil
	}
	js, err := jetstream.New(l.deps.Conn)
	if err != nil {
		return err
	}
	status := l.deps.Conn.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	defer l.deps.Conn.RemoveStatusListener(status)
	reconnectDecisions := make(chan struct{}, 1)
	reconnectPresence := make(chan struct{}, 1)
	p := newPresence(l, js)
	presenceDone := make(chan struct{})
	go func() {
		defer close(presenceDone)
		p.run(ctx, reconnectPresence)
	}()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-status:
				p.setConnected(s == nats.CONNECTED)
				if s == nats.CONNECTED {
					signal(reconnectDecisions)
					signal(reconnectPresence)
				}
			}
		}
	}()
	// Learn the instance count before applying decisions, so a joining
	// instance never applies an unsplit global rate.
	select {
	case <-p.ready:
	case <-time.After(2 * time.Second):
	case <-ctx.Done():
	}
	l.watchLoop(ctx, js, reconnectDecisions)
	<-presenceDone
	return nil
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// expiryLoop drops decisions as they expire; used without NATS.
func (l *Limiter) expiryLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		l.resetExpiry(timer)
		select {
		case <-ctx.Done():
			return
		case <-l.expiryC:
		case <-timer.C:
			l.mu.Lock()
			l.expireLocked(time.Now())
			l.mu.Unlock()
		}
	}
}

func (l *Limiter) resetExpiry(timer *time.Timer) {
	l.mu.Lock()
	next := l.nextExpiryLocked()
	l.mu.Unlock()
	d := time.Hour
	if !next.IsZero() {
		d = max(time.Until(next), time.Millisecond)
	}
	timer.Reset(d)
}

// watchLoop keeps one KV watch alive. The nats.go watcher does not recover
// after a lost connection (nats.go issue #1777), so on every reconnect, and
// whenever the watch ends, it is re-created from the last revision seen.
func (l *Limiter) watchLoop(ctx context.Context, js jetstream.JetStream, reconnect <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	first := true
	for ctx.Err() == nil {
		if !first {
			l.metrics.incWatchRestarts()
			select {
			case <-ctx.Done():
				return
			case <-time.After(l.cfg.RewatchBackoff):
			}
		}
		first = false
		if err := l.watchOnce(ctx, js, reconnect, timer); err != nil && ctx.Err() == nil {
			l.log.Warn("decision watch ended; re-watching", "err", err)
		}
	}
}

var (
	errRewatch       = errors.New("reconnected")
	errWatcherClosed = errors.New("watcher closed")
)

func (l *Limiter) watchOnce(ctx context.Context, js jetstream.JetStream, reconnect <-chan struct{}, timer *time.Timer) error {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	kv, err := openBucket(sctx, js, event.DecisionsBucket)
	if err != nil {
		cancel()
		return err
	}
	l.mu.Lock()
	from := l.lastRev
	l.mu.Unlock()
	full := from == 0
	if !full {
		// A bucket that is behind our revision was recreated: resync fully.
		st, err := kv.Status(sctx)
		if err != nil {
			cancel()
			return err
		}
		if js, ok := st.(*jetstream.KeyValueBucketStatus); ok && js.StreamInfo().State.LastSeq < from {
			full = true
		}
	}
	cancel()
	var opts []jetstream.WatchOpt
	if !full {
		opts = append(opts, jetstream.ResumeFromRevision(from+1))
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	w, err := kv.WatchAll(wctx, opts...)
	if err != nil {
		return err
	}
	defer w.Stop()
	// In a full resync, the initial values replace the whole state, but
	// for the keys whose value was rejected: kept holds them, and the
	// limiter keeps what it had for them.
	var initial map[string]*Decision
	kept := map[string]bool{}
	if full {
		initial = map[string]*Decision{}
	}
	// rev is the highest revision collected; it becomes lastRev only when
	// its entries are applied, so a watch that dies before then resumes
	// from what was applied, not from what was merely read.
	var rev uint64
	for {
		l.resetExpiry(timer)
		select {
		case <-ctx.Done():
			return nil
		case <-reconnect:
			return errRewatch
		case <-timer.C:
			l.mu.Lock()
			l.expireLocked(time.Now())
			l.mu.Unlock()
		case <-l.expiryC:
		case e, ok := <-w.Updates():
			if !ok {
				return errWatcherClosed
			}
			changes := map[string]*Decision{}
			done := l.collect(e, changes, &initial, kept, &rev)
			// Coalesce whatever else is already queued into one snapshot.
		drain:
			for !done && len(changes) < 4096 {
				select {
				case e, ok := <-w.Updates():
					if !ok {
						break drain
					}
					done = l.collect(e, changes, &initial, kept, &rev)
				default:
					break drain
				}
			}
			if initial != nil {
				if !done {
					continue
				}
				l.mu.Lock()
				now := time.Now()
				for key := range l.decisions {
					if _, ok := initial[key]; !ok && !kept[key] {
						initial[key] = nil
					}
				}
				l.guardLocked(initial, now)
				l.applyLocked(initial, now)
				l.lastRev = max(l.lastRev, rev)
				l.mu.Unlock()
				l.metrics.addUpdates(len(initial))
				initial = nil
				clear(kept)
				continue
			}
			// Rejected entries leave changes empty but still move the
			// resume point, so a re-watch does not count them again.
			l.mu.Lock()
			now := time.Now()
			l.guardLocked(changes, now)
			if len(changes) > 0 {
				l.applyLocked(changes, now)
			}
			l.lastRev = max(l.lastRev, rev)
			l.mu.Unlock()
			l.metrics.addUpdates(len(changes))
		}
	}
}

// collect records one watch entry into changes (or into *initial during a
// full resync), raises *rev to its revision, and reports whether it was the
// end-of-initial-values marker. A put is checked by the verifier; a
// rejected one is counted and leaves the key out of changes (and in kept
// during a resync), so the limiter keeps what it had for the key. A delete
// or purge becomes a nil change, which guardLocked may still refuse.
func (l *Limiter) collect(e jetstream.KeyValueEntry, changes map[string]*Decision, initial *map[string]*Decision,
	kept map[string]bool, rev *uint64) bool {
	if e == nil {
		return true
	}
	*rev = max(*rev, e.Revision())
	var d *Decision
	if e.Operation() == jetstream.KeyValuePut {
		dec, err := l.verifier.Check(e.Key(), e.Value(), time.Now())
		if err != nil {
			l.reject(e.Key(), RejectReason(err), err)
			if *initial != nil {
				delete(*initial, e.Key())
				kept[e.Key()] = true
			}
			return false
		}
		d = &dec
	}
	if *initial != nil {
		delete(kept, e.Key())
		if d != nil {
			(*initial)[e.Key()] = d
		} else {
			delete(*initial, e.Key())
		}
		return false
	}
	changes[e.Key()] = d
	return false
}

// guardLocked drops from changes what would remove a live decision without
// a signature: a delete or purge (nil), or a decision that had already
// expired when it arrived (a replayed old value). Each is counted as
// rejected and the live decision stays until it expires or a signed
// decision replaces it. With InsecureAcceptUnsigned nothing is dropped.
// l.mu must be held.
func (l *Limiter) guardLocked(changes map[string]*Decision, now time.Time) {
	if !l.verifier.RequiresSignature() {
		return
	}
	for key, d := range changes {
		if d != nil && d.Live(now) {
			continue
		}
		held, ok := l.decisions[key]
		if !ok || !held.Live(now) {
			continue
		}
		delete(changes, key)
		if d == nil {
			l.reject(key, RejectUnsigned, errors.New("a delete or purge of a live decision carries no signature"))
		} else {
			l.reject(key, RejectExpired, fmt.Errorf("the decision expired at %s, before it arrived", d.ExpiresAt.UTC().Format(time.RFC3339)))
		}
	}
}

// reject counts a rejected decision and logs it, at most one line per
// rejectLog period with the count of those not logged.
func (l *Limiter) reject(key, reason string, err error) {
	if c := l.rejectedBy[reason]; c != nil {
		c.Add(1)
	}
	if n, ok := l.rejected.allow(time.Now()); ok {
		l.log.Warn("ignoring a decision from the bucket", "key", key, "reason", reason, "err", err, "count", n)
	}
}

// Rejected returns how many decisions from the bucket were rejected for
// reason (one of RejectReasons).
func (l *Limiter) Rejected(reason string) uint64 {
	if c := l.rejectedBy[reason]; c != nil {
		return c.Load()
	}
	return 0
}

// rejectLog allows one log line per every and counts the events between.
type rejectLog struct {
	every time.Duration
	mu    sync.Mutex
	last  time.Time
	n     int
}

// allow counts one event and reports whether to log it, with the events
// since the last line (this one included).
func (r *rejectLog) allow(now time.Time) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	if !r.last.IsZero() && now.Sub(r.last) < r.every {
		return 0, false
	}
	n := r.n
	r.last, r.n = now, 0
	return n, true
}
