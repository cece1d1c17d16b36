package collector

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/backoff"
)

// Reasons of tenantguard_collector_duplicates_total.
const (
	dupRedelivery = "redelivery" // JetStream delivered a stored message again
	dupRepublish  = "republish"  // a publisher sent a stored id again
	// dupAnyTime is a republish of a message without Nats-Msg-Id, whose
	// copies may carry different times: it is looked up across the
	// lateness window. It is counted as republish.
	dupAnyTime = "republish-any-time"
)

// batch is the unit of work: every message in it is acked together, after
// its valid events are stored and its invalid ones dead-lettered.
//
// The slot consumers ack with AckAll: an ack of a message acks every
// message of its consumer with a lower stream sequence. A slot delivers in
// stream order to its one owner, so every message below a batch's highest
// of that slot was delivered earlier, into this batch or an earlier one,
// which was stored before this one; the only messages delivered below it
// later are redeliveries, stored already. So the batch acks one message
// per slot, its highest (heads). Messages a previous owner left unacked
// are redelivered first (takeOver), never behind newer ones.
type batch struct {
	msgs     []jetstream.Msg
	heads    map[string]head // consumer name -> its highest message here
	events   []event.Event   // backing store for rows; never grows past cap
	rows     []store.Row
	costs    []float64
	check    []int    // indexes into rows that ClickHouse may already hold
	why      []string // per check entry: the duplicates_total reason if it does
	dlq      []dlqItem
	seen     map[string]struct{}
	newest   time.Time
	duplicat int
}

// head is a slot's message with the highest stream sequence in a batch.
type head struct {
	seq uint64
	msg jetstream.Msg
}

type dlqItem struct {
	msg  jetstream.Msg
	verr *event.ValidationError
	done bool // JetStream confirmed the dead letter
}

func newBatch(n int) *batch {
	return &batch{
		msgs:   make([]jetstream.Msg, 0, n),
		events: make([]event.Event, 0, n),
		rows:   make([]store.Row, 0, n),
		costs:  make([]float64, 0, n),
		seen:   make(map[string]struct{}, n),
		heads:  map[string]head{},
	}
}

func (b *batch) reset() {
	clear(b.msgs)
	b.msgs = b.msgs[:0]
	b.events = b.events[:0]
	clear(b.rows)
	b.rows = b.rows[:0]
	b.costs = b.costs[:0]
	b.check = b.check[:0]
	b.why = b.why[:0]
	b.dlq = b.dlq[:0]
	clear(b.seen)
	clear(b.heads)
	b.newest = time.Time{}
	b.duplicat = 0
}

// add decodes, validates and prices one message into the batch.
// verifyUpTo is the last stream sequence its consumer may deliver for the
// first time although ClickHouse holds it.
func (c *Collector) add(b *batch, msg jetstream.Msg, verifyUpTo uint64) {
	b.msgs = append(b.msgs, msg)
	md, mdErr := msg.Metadata()
	if mdErr == nil {
		if h, ok := b.heads[md.Consumer]; !ok || md.Sequence.Stream > h.seq {
			b.heads[md.Consumer] = head{seq: md.Sequence.Stream, msg: msg}
		}
	}
	b.events = append(b.events, event.Event{})
	e := &b.events[len(b.events)-1]
	var verr *event.ValidationError
	if subject, err := event.OriginalSubject(msg.Subject(), c.cfg.Partitions); err != nil {
		verr = &event.ValidationError{Reason: event.ReasonSubjectMismatch, Detail: err.Error()}
	} else {
		verr = c.validator.Parse(msg.Data(), subject, e)
	}
	header := msg.Headers().Get(event.HeaderMsgID)
	if verr == nil {
		verr = event.CheckMsgID(header, e)
	}
	if verr != nil {
		b.events = b.events[:len(b.events)-1]
		b.dlq = append(b.dlq, dlqItem{msg: msg, verr: verr})
		return
	}
	key := e.TenantID + "\x00" + e.ID
	if _, dup := b.seen[key]; dup {
		// The same id twice in one batch: a publisher retry outside the
		// duplicate window. Store it once.
		b.events = b.events[:len(b.events)-1]
		b.duplicat++
		return
	}
	plan, unit := c.pricer.Price(e.TenantID, e.Kind)
	cost := pricing.Cost(e.Quantity, unit)
	if !pricing.Fits(cost) {
		// It would fail its whole batch's insert on every retry and stall
		// every tenant behind it: dead-letter it instead.
		b.events = b.events[:len(b.events)-1]
		b.dlq = append(b.dlq, dlqItem{msg: msg, verr: &event.ValidationError{Reason: event.ReasonBadQuantity, Field: "quantity",
			Detail: fmt.Sprintf("quantity %s × unit price %s overflows the cost column's Decimal(18, 9)",
				strconv.FormatFloat(e.Quantity, 'g', -1, 64), unit)}})
		return
	}
	b.seen[key] = struct{}{}
	// JetStream deduplicates neither a redelivery nor, outside its window
	// or without a Nats-Msg-Id, a second publish: such rows are checked
	// against ClickHouse before they are stored.
	redelivered := mdErr == nil && (md.NumDelivered > 1 || md.Sequence.Stream <= verifyUpTo)
	if redelivered && md.NumDelivered > 1 {
		c.m.redelivered.Inc()
	}
	switch {
	case header == "":
		b.check, b.why = append(b.check, len(b.rows)), append(b.why, dupAnyTime)
	case redelivered:
		b.check, b.why = append(b.check, len(b.rows)), append(b.why, dupRedelivery)
	case c.cfg.DedupHorizon:
		b.check, b.why = append(b.check, len(b.rows)), append(b.why, dupRepublish)
	}
	b.rows = append(b.rows, store.Row{Event: e, Plan: plan, UnitPrice: unit, Cost: cost, PriceVersion: c.pricer.Version()})
	b.costs = append(b.costs, cost.InexactFloat64())
	if e.Time.After(b.newest) {
		b.newest = e.Time
	}
}

// flush dead-letters, de-duplicates, stores and acks the batch. It retries
// until it succeeds or ctx ends; on ctx end nothing is acked.
func (c *Collector) flush(ctx context.Context, b *batch) error {
	if len(b.msgs) == 0 {
		return nil
	}
	defer c.keepInProgress(b)()
	if len(b.dlq) > 0 {
		if err := c.retry(ctx, "dead-letter", len(b.msgs), func() error { return c.deadLetter(ctx, b.dlq) }); err != nil {
			return err
		}
	}
	rows, costs := b.rows, b.costs
	if len(b.check) > 0 {
		var found map[string]struct{}
		if err := c.retry(ctx, "duplicate check", len(b.msgs), func() error {
			var err error
			rows, costs, found, err = c.dropStored(ctx, b.rows, b.costs, b.check, b.why)
			return err
		}); err != nil {
			return err
		}
		for i, idx := range b.check {
			if e := b.rows[idx].Event; len(found) > 0 {
				if _, ok := found[e.TenantID+"\x00"+e.ID]; ok {
					c.m.duplicates.WithLabelValues(strings.TrimSuffix(b.why[i], "-any-time")).Inc()
				}
			}
		}
	}
	c.m.duplicates.WithLabelValues(dupRepublish).Add(float64(b.duplicat))
	if len(rows) > 0 {
		start := time.Now()
		pending, failed := rows, false
		if err := c.retry(ctx, "insert", len(b.msgs), func() error {
			if failed {
				// A failed insert may still have stored some rows (one part
				// per partition) or all of them (the reply was lost after
				// the commit): drop those before inserting again.
				var err error
				if pending, _, _, err = c.dropStored(ctx, pending, nil, nil, nil); err != nil || len(pending) == 0 {
					return err
				}
			}
			err := c.store.InsertEvents(ctx, pending, start)
			failed = err != nil
			return err
		}); err != nil {
			return err
		}
		c.m.insertDur.Observe(time.Since(start).Seconds())
		c.m.batchRows.Observe(float64(len(rows)))
		c.m.lag.Set(time.Since(b.newest).Seconds())
		for i := range rows {
			for _, o := range c.observers {
				o.Observe(rows[i].Event, costs[i])
			}
		}
	}
	c.m.events.WithLabelValues("stored").Add(float64(len(rows)))
	c.m.events.WithLabelValues("duplicate").Add(float64(len(b.rows) - len(rows) + b.duplicat))
	for _, h := range b.heads {
		// AckAll: this acks every message of the slot up to h. A failed
		// ack means redelivery, which the ClickHouse check absorbs.
		_ = h.msg.Ack()
	}
	c.progress()
	return nil
}

// dropStored returns rows (and costs, when not nil) without the rows that
// ClickHouse already holds, and the tenant\x00id keys it found. It looks up
// only the rows at the indexes in check, or every row when check is nil; a
// row whose why is dupAnyTime is looked up across the lateness window.
func (c *Collector) dropStored(ctx context.Context, rows []store.Row, costs []float64, check []int, why []string) ([]store.Row, []float64, map[string]struct{}, error) {
	keys := make([]store.EventKey, 0, len(rows))
	if check == nil {
		for i := range rows {
			e := rows[i].Event
			keys = append(keys, store.EventKey{TenantID: e.TenantID, Kind: e.Kind, ID: e.ID, Time: e.Time})
		}
	} else {
		now := time.Now()
		for i, idx := range check {
			e := rows[idx].Event
			k := store.EventKey{TenantID: e.TenantID, Kind: e.Kind, ID: e.ID, Time: e.Time}
			if why[i] == dupAnyTime {
				// Any copy inside the valid time window counts.
				k.From, k.To = now.Add(-c.cfg.Lateness), now.Add(event.MaxFuture)
			}
			keys = append(keys, k)
		}
	}
	found, err := c.store.ExistingIDs(ctx, keys)
	if err != nil || len(found) == 0 {
		return rows, costs, found, err
	}
	kept := make([]store.Row, 0, len(rows))
	var keptCosts []float64
	if costs != nil {
		keptCosts = make([]float64, 0, len(rows))
	}
	for i, r := range rows {
		if _, stored := found[r.Event.TenantID+"\x00"+r.Event.ID]; stored {
			continue
		}
		kept = append(kept, r)
		if costs != nil {
			keptCosts = append(keptCosts, costs[i])
		}
	}
	c.log.Info("skipped events already stored", "count", len(rows)-len(kept))
	return kept, keptCosts, found, nil
}

// deadLetter publishes the invalid messages not yet confirmed to the DLQ
// stream and waits for JetStream to confirm each. A dead letter counts once,
// when it is first confirmed; a retry after a partial failure publishes only
// the rest.
func (c *Collector) deadLetter(ctx context.Context, items []dlqItem) error {
	type pending struct {
		i int
		f jetstream.PubAckFuture
	}
	futures := make([]pending, 0, len(items))
	for i := range items {
		if items[i].done {
			continue
		}
		f, err := c.js.PublishMsgAsync(dlqMessage(items[i].msg, items[i].verr, c.cfg.Partitions))
		if err != nil {
			return fmt.Errorf("publish to %s: %w", event.DLQStream, err)
		}
		futures = append(futures, pending{i, f})
	}
	for _, p := range futures {
		select {
		case ack := <-p.f.Ok():
			d := &items[p.i]
			d.done = true
			if !ack.Duplicate { // already dead-lettered before a crash
				c.m.dlq.WithLabelValues(string(d.verr.Reason)).Inc()
				c.m.events.WithLabelValues("dlq").Inc()
			}
		case err := <-p.f.Err():
			return fmt.Errorf("publish to %s: %w", event.DLQStream, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Second):
			return fmt.Errorf("publish to %s: no ack after 10s", event.DLQStream)
		}
	}
	return nil
}

// keepInProgress tells JetStream every ack_wait/3 that the batch's messages
// are still being worked on, until stop is called, so a slow insert or a
// ClickHouse outage does not get them redelivered to another replica.
func (c *Collector) keepInProgress(b *batch) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(c.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, m := range b.msgs {
					_ = m.InProgress()
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

// retry runs fn until it succeeds or ctx ends, backing off between failures
// (retry_min doubling to retry_max, with jitter). While it fails the
// collector reports itself unhealthy; count is the messages waiting on it.
func (c *Collector) retry(ctx context.Context, what string, count int, fn func() error) error {
	policy := backoff.Policy{Min: c.cfg.RetryMin, Max: c.cfg.RetryMax, Retries: -1}
	retries, err := backoff.Retry(ctx, policy, func(context.Context) error { return fn() },
		func(attempt int, err error, wait time.Duration) {
			c.healthy.Store(false)
			c.m.healthy.Set(0)
			c.failing.Store(&what)
			c.m.insertErrors.Inc()
			c.log.Warn(what+" failed; retrying", "err", err, "count", count, "attempt", attempt, "backoff", wait)
		})
	if err != nil {
		return ctx.Err()
	}
	if retries > 0 {
		c.log.Info(what+" recovered", "count", count, "attempts", retries+1)
	}
	c.healthy.Store(true)
	c.m.healthy.Set(1)
	c.failing.Store(nil)
	return nil
}
