package limiter

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
)

// presence heartbeats <group>.<id> in tenantguard_limiters and counts the
// live instances of the group. A peer is live while its last heartbeat,
// timed by this instance's clock on arrival, is younger than PresenceTTL.
// While this instance is disconnected the peer set is frozen, so an outage
// never makes every instance think it is alone and multiply the rate.
type presence struct {
	l         *Limiter
	js        jetstream.JetStream
	key       string
	ready     chan struct{}
	readyOnce sync.Once
	connected atomic.Bool

	mu    sync.Mutex
	peers map[string]time.Time
}

func newPresence(l *Limiter, js jetstream.JetStream) *presence {
	p := &presence{l: l, js: js, key: l.cfg.Group + "." + l.id, ready: make(chan struct{}), peers: map[string]time.Time{}}
	p.connected.Store(l.deps.Conn.IsConnected())
	return p
}

func (p *presence) setConnected(ok bool) { p.connected.Store(ok) }

func (p *presence) markReady() { p.readyOnce.Do(func() { close(p.ready) }) }

func (p *presence) run(ctx context.Context, reconnect <-chan struct{}) {
	defer p.markReady()
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		p.heartbeat(ctx)
	}()
	for ctx.Err() == nil {
		if err := p.watch(ctx, reconnect); err != nil && ctx.Err() == nil {
			p.l.log.Warn("presence watch ended; re-watching", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(p.l.cfg.RewatchBackoff):
		}
	}
	<-hbDone
}

func (p *presence) open(ctx context.Context) (jetstream.KeyValue, error) {
	octx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return openBucket(octx, p.js, event.LimitersBucket)
}

// heartbeat puts the presence key every HeartbeatInterval, re-opening the
// bucket after a failure, and deletes the key when ctx ends so peers
// re-split at once instead of waiting for the TTL.
func (p *presence) heartbeat(ctx context.Context) {
	t := time.NewTicker(p.l.cfg.HeartbeatInterval)
	defer t.Stop()
	var kv jetstream.KeyValue
	for {
		var err error
		if kv == nil {
			kv, err = p.open(ctx)
		}
		if kv != nil {
			hctx, cancel := context.WithTimeout(ctx, p.l.cfg.HeartbeatInterval)
			_, err = kv.Put(hctx, p.key, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
			cancel()
			if err != nil && ctx.Err() == nil {
				kv = nil // re-open: the bucket may have been recreated
			}
		}
		if err != nil && ctx.Err() == nil {
			p.l.log.Debug("presence heartbeat failed", "err", err)
		}
		select {
		case <-ctx.Done():
			if kv != nil {
				dctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = kv.Delete(dctx, p.key)
				cancel()
			}
			return
		case <-t.C:
		}
	}
}

// watch follows the group's presence keys until reconnect or failure. A
// fresh watch (not resumed) gets the current keys, so peers that left
// during an outage are gone from its initial set.
func (p *presence) watch(ctx context.Context, reconnect <-chan struct{}) error {
	kv, err := p.open(ctx)
	if err != nil {
		p.markReady()
		return err
	}
	w, err := kv.Watch(ctx, p.l.cfg.Group+".*")
	if err != nil {
		p.markReady()
		return err
	}
	defer w.Stop()
	prefix := p.l.cfg.Group + "."
	initial := map[string]time.Time{}
	inInitial := true
	tick := time.NewTicker(p.l.cfg.HeartbeatInterval / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reconnect:
			return errRewatch
		case <-tick.C:
			if !inInitial {
				p.recount(time.Now())
			}
		case e, ok := <-w.Updates():
			if !ok {
				return errWatcherClosed
			}
			now := time.Now()
			if e == nil {
				p.mu.Lock()
				p.peers = initial
				p.mu.Unlock()
				inInitial = false
				p.recount(now)
				p.markReady()
				continue
			}
			id := strings.TrimPrefix(e.Key(), prefix)
			m := initial
			if !inInitial {
				p.mu.Lock()
				m = p.peers
			}
			if e.Operation() == jetstream.KeyValuePut {
				m[id] = now
			} else {
				delete(m, id)
			}
			if !inInitial {
				p.mu.Unlock()
				p.recount(now)
			}
		}
	}
}

// recount expires silent peers (unless disconnected) and re-splits when
// the count changed. This instance always counts itself.
func (p *presence) recount(now time.Time) {
	p.mu.Lock()
	if p.connected.Load() {
		for id, seen := range p.peers {
			if now.Sub(seen) > p.l.cfg.PresenceTTL && id != p.l.id {
				delete(p.peers, id)
			}
		}
	}
	n := len(p.peers)
	if _, self := p.peers[p.l.id]; !self {
		n++
	}
	p.mu.Unlock()
	p.l.setInstances(n)
}
