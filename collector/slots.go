package collector

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/partition"
)

// PriorityGroup is the one priority group of the slot consumers, whose
// pinned-client policy lets one client pull at a time.
const PriorityGroup = "owner"

// slots consumes the slots the owner hands out: one iterator each, all
// feeding the one batch loop through msgs.
type slots struct {
	c      *Collector
	runCtx context.Context // Run's: the loop and the iterators end with it
	msgs   chan item
	failed chan error // an iterator ended by itself

	mu      sync.Mutex
	running map[int]*slotRun
}

var _ partition.Slots = (*slots)(nil)

type slotRun struct {
	durable  string
	cons     jetstream.Consumer
	iter     jetstream.MessagesContext
	done     chan struct{}
	stopping chan struct{}
}

func newSlots(c *Collector, runCtx context.Context) *slots {
	// msgs is what keeps the slots fair: once it is full, each slot's
	// feeder waits with one message, and a channel serves waiting senders
	// in arrival order, so the slots take turns, one message each, and a
	// flooded slot is at most the channel's depth ahead of the others
	// (TestFloodedPartitionDoesNotHoldOthersBack).
	return &slots{c: c, runCtx: runCtx, msgs: make(chan item, min(c.cfg.BatchMaxRows, 4096)),
		failed: make(chan error, 1), running: map[int]*slotRun{}}
}

// consumers returns the running slots' consumers.
func (s *slots) consumers() []jetstream.Consumer {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]jetstream.Consumer, 0, len(s.running))
	for _, r := range s.running {
		out = append(out, r.cons)
	}
	return out
}

// owns returns whether a tenant's partition is among the running slots.
func (s *slots) owns() func(tenantID string) bool {
	s.mu.Lock()
	set := make(map[int]bool, len(s.running))
	for slot := range s.running {
		set[slot] = true
	}
	s.mu.Unlock()
	n := s.c.cfg.Partitions
	return func(tenantID string) bool { return set[event.Partition(tenantID, n)] }
}

// handover tells the Handover the owned tenants, counting the slots in
// plus as running already (the ones about to start).
func (s *slots) handover(ctx context.Context, plus []int) {
	h := s.c.handover
	if h == nil || ctx.Err() != nil {
		return
	}
	owns := s.owns()
	gained := false
	if len(plus) > 0 {
		n, base := s.c.cfg.Partitions, owns
		extra := make(map[int]bool, len(plus))
		for _, slot := range plus {
			if slot < n {
				extra[slot] = true
				gained = true
			}
		}
		owns = func(tenantID string) bool { return extra[event.Partition(tenantID, n)] || base(tenantID) }
	}
	start := time.Now()
	if err := h.Owned(ctx, owns, gained); err != nil && ctx.Err() == nil {
		s.c.log.Warn("handover", "err", err, "duration", time.Since(start))
	}
}

// Start creates or updates each slot's pinned consumer, hands the slots'
// tenants over in one go (one warm start for all of them), then consumes
// them. A slot that could not be set up is left out, its error returned.
func (s *slots) Start(ctx context.Context, list []int) map[int]error {
	failed := map[int]error{}
	type ready struct {
		slot       int
		durable    string
		cons       jetstream.Consumer
		verifyUpTo uint64
	}
	var prepared []ready
	var gained []int
	for _, slot := range list {
		durable, cons, verifyUpTo, err := s.consumer(ctx, slot)
		if err != nil {
			failed[slot] = err
			continue
		}
		prepared = append(prepared, ready{slot, durable, cons, verifyUpTo})
		gained = append(gained, slot)
	}
	if len(prepared) == 0 {
		return failed
	}
	s.handover(ctx, gained)
	cfg := s.c.cfg
	for _, p := range prepared {
		// Pull requests expire well inside PinnedTTL, so an idle owner keeps
		// its pin, and a dead one loses it within PinnedTTL. Each slot buffers
		// its share of one batch, so all of them together hold about one.
		iter, err := p.cons.Messages(
			jetstream.PullMaxMessages(max(256, min(cfg.BatchMaxRows, cfg.MaxAckPending)/(cfg.Partitions+1))),
			jetstream.PullPriorityGroup(PriorityGroup),
			jetstream.PullExpiry(max(time.Second, cfg.LeaseTTL/3)),
		)
		if err != nil {
			failed[p.slot] = fmt.Errorf("consume %s: %w", p.durable, err)
			continue
		}
		r := &slotRun{durable: p.durable, cons: p.cons, iter: iter, done: make(chan struct{}), stopping: make(chan struct{})}
		s.mu.Lock()
		s.running[p.slot] = r
		s.mu.Unlock()
		go s.feed(r, p.verifyUpTo)
		s.c.log.Info("consuming slot", "durable", p.durable)
	}
	return failed
}

// consumer creates or updates a slot's pinned consumer and says up to
// which stream sequence its deliveries must be checked against ClickHouse.
func (s *slots) consumer(ctx context.Context, slot int) (string, jetstream.Consumer, uint64, error) {
	cfg := s.c.cfg
	durable := SlotDurable(cfg.Durable, slot, cfg.Partitions)
	cons, verifyUpTo, err := s.c.slotConsumer(ctx, slot)
	if err != nil {
		return "", nil, 0, err
	}
	return durable, cons, verifyUpTo, nil
}

// feed forwards a slot's messages to the batch loop until its iterator ends.
func (s *slots) feed(r *slotRun, verifyUpTo uint64) {
	defer close(r.done)
	var why error
	for {
		msg, err := r.iter.Next()
		if err != nil {
			if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				// A terminal error (consumer or stream deleted) is
				// followed by ErrMsgIteratorClosed: keep it as the reason.
				s.c.log.Warn("pull consumer", "durable", r.durable, "err", err)
				why = err
				continue
			}
			select {
			case <-r.stopping:
			case <-s.runCtx.Done():
			default:
				if why == nil {
					why = err
				}
				select {
				case s.failed <- fmt.Errorf("consume %s: consumer %s stopped: %w", event.UsageStream, r.durable, why):
				default:
				}
			}
			return
		}
		s.c.progress()
		select {
		case s.msgs <- item{msg: msg, verifyUpTo: verifyUpTo}:
		case <-s.runCtx.Done():
			r.iter.Stop()
			return
		}
	}
}

// Stop drains the slot's iterator into the batch loop, has the loop flush
// and ack the batch, unpins the consumer so the next owner pulls at once,
// and tells the Handover. When Run's context has ended the batch stays
// unacked, for redelivery.
func (s *slots) Stop(ctx context.Context, slot int) error {
	s.mu.Lock()
	r, ok := s.running[slot]
	s.mu.Unlock()
	if !ok {
		return nil
	}
	close(r.stopping)
	r.iter.Drain()
	select {
	case <-r.done:
	case <-s.runCtx.Done():
		r.iter.Stop()
		<-r.done
	}
	flushed := make(chan struct{})
	select {
	case s.msgs <- item{flushed: flushed}:
		select {
		case <-flushed:
		case <-s.runCtx.Done():
		}
	case <-s.runCtx.Done():
	}
	s.mu.Lock()
	delete(s.running, slot)
	s.mu.Unlock()
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if st, err := s.c.js.Stream(uctx, event.UsageStream); err == nil {
		if err := st.UnpinConsumer(uctx, r.durable, PriorityGroup); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			s.c.log.Info("unpin; the pin expires by itself", "durable", r.durable, "err", err)
		}
	}
	s.c.log.Info("stopped slot", "durable", r.durable)
	s.handover(ctx, nil)
	return nil
}

// Owned returns the slots this replica holds the lease of: partitions
// 0 to collector.partitions-1, and collector.partitions for the strays.
func (c *Collector) Owned() []int { return c.owner.Held() }

// ReplicaID is this replica's id in the partitions bucket.
func (c *Collector) ReplicaID() string { return c.owner.ID() }

// Owns reports whether this replica consumes the tenant's partition now:
// the same answer its Handover was last given.
func (c *Collector) Owns(tenantID string) bool {
	s := c.active.Load()
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running[event.Partition(tenantID, c.cfg.Partitions)] != nil
}
