package collector

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
)

// verifyKey is the slot consumer's metadata key that holds its verify
// bound: the last stream sequence it may deliver for the first time
// although ClickHouse already holds it. Messages up to it are checked
// against ClickHouse like redeliveries. The bound only grows, and lives
// with the consumer, so a replica that crashes during a replay leaves it
// to the next owner.
const verifyKey = "tenantguard_verify_up_to"

// SlotDurable is the consumer of a slot: <durable>-p<i>-ackall for
// partition i, <durable>-strays-ackall for slot == partitions. The suffix
// marks the acknowledgement policy: JetStream cannot change the policy of
// an existing consumer, so these are new consumers beside the explicit-ack
// ones of earlier versions, which they replace (see slotConsumer).
func SlotDurable(durable string, slot, partitions int) string {
	return LegacySlotDurable(durable, slot, partitions) + "-ackall"
}

// LegacySlotDurable is the explicit-ack consumer that earlier versions
// used for a slot: <durable>-p<i>, <durable>-strays.
func LegacySlotDurable(durable string, slot, partitions int) string {
	if slot == partitions {
		return durable + "-strays"
	}
	return durable + "-p" + strconv.Itoa(slot)
}

// slotConsumer creates or updates a slot's AckAll consumer and returns it
// with its verify bound. The consumer starts where its predecessor left
// off:
//   - It exists: it keeps its position and its verify bound.
//   - An explicit-ack consumer of an earlier version exists: the new one
//     starts after that one's ack floor, with every message up to the
//     stream's last sequence verified (explicit acks leave acked messages
//     above the floor, and the old consumer's own replay bound is unknown);
//     the old one is deleted once the new one exists. A crash in between
//     leaves both; the next start finds the new one, its bound in its
//     metadata, and deletes the old one again.
//   - Neither exists (first start, or deleted by an operator): it delivers
//     the whole retained stream under its filter, which ClickHouse may
//     already hold, so it verifies up to the stream's last sequence.
//
// Then it takes over the messages a crashed previous owner left unacked
// (takeOver).
func (c *Collector) slotConsumer(ctx context.Context, slot int) (jetstream.Consumer, uint64, error) {
	cfg := c.cfg
	durable := SlotDurable(cfg.Durable, slot, cfg.Partitions)
	legacy := LegacySlotDurable(cfg.Durable, slot, cfg.Partitions)
	filter := event.UsageSubjects
	if slot < cfg.Partitions {
		filter = event.PartitionSubjects(slot)
	}
	cc := jetstream.ConsumerConfig{
		Durable:        durable,
		Description:    "tenantguard collector, slot " + strconv.Itoa(slot),
		AckPolicy:      jetstream.AckAllPolicy,
		AckWait:        cfg.AckWait,
		MaxAckPending:  cfg.MaxAckPending,
		MaxDeliver:     -1,
		FilterSubject:  filter,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{PriorityGroup},
		PinnedTTL:      cfg.LeaseTTL,
	}
	info, err := c.consumerInfo(ctx, durable)
	if err != nil {
		return nil, 0, err
	}
	var verify uint64
	if info != nil {
		verify, _ = strconv.ParseUint(info.Config.Metadata[verifyKey], 10, 64)
		cc.DeliverPolicy, cc.OptStartSeq = info.Config.DeliverPolicy, info.Config.OptStartSeq
	} else {
		if verify, err = c.streamLastSeq(ctx); err != nil {
			return nil, 0, err
		}
		old, err := c.consumerInfo(ctx, legacy)
		if err != nil {
			return nil, 0, err
		}
		if old != nil {
			cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, old.AckFloor.Stream+1
			c.log.Info("replacing an explicit-ack consumer: starting after its ack floor, checking against ClickHouse up to the stream's last message",
				"durable", legacy, "new", durable, "count", verify-old.AckFloor.Stream)
		} else if verify > 0 {
			c.log.Info("new consumer: checking the retained stream against ClickHouse before storing", "durable", durable)
		}
	}
	cons, err := c.createConsumer(ctx, cc, verify)
	if err != nil {
		return nil, 0, err
	}
	// Delete a legacy consumer left by an upgrade, now or after a crash
	// between creating the new consumer and this.
	if err := c.js.DeleteConsumer(ctx, event.UsageStream, legacy); err == nil {
		c.log.Info("deleted the explicit-ack consumer of an earlier version", "durable", legacy)
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		c.log.Warn("delete the explicit-ack consumer of an earlier version; retried at the next start", "durable", legacy, "err", err)
	}
	verify, err = c.takeOver(ctx, cons, cc, verify)
	if err != nil {
		return nil, 0, err
	}
	return cons, verify, nil
}

// takeOver has the messages a previous owner left delivered but unacked
// delivered again now, in order. A crashed owner leaves them; one that
// stopped cleanly acked its batch before it unpinned the consumer. Left
// alone they would come back only after ack_wait, behind newer messages,
// and an AckAll ack of a newer message would ack them unstored: lost.
//
// It waits for the previous owner's pin to go (for at most lease_ttl + 1s,
// the pin's lifetime; after that it fails, and the slot's lease is given
// back), then raises the verify bound to the last delivered
// sequence, since a reset counts the redeliveries as first deliveries, and
// resets the consumer to its ack floor.
func (c *Collector) takeOver(ctx context.Context, cons jetstream.Consumer, cc jetstream.ConsumerConfig, verify uint64) (uint64, error) {
	deadline := time.Now().Add(c.cfg.LeaseTTL + time.Second)
	var info *jetstream.ConsumerInfo
	for {
		var err error
		if info, err = cons.Info(ctx); err != nil {
			return 0, fmt.Errorf("consumer %s: %w", cc.Durable, err)
		}
		if info.NumAckPending == 0 {
			return verify, nil
		}
		if !pinned(info) {
			break
		}
		if time.Now().After(deadline) {
			// The previous owner still pulls: a reset now would hand it
			// redeliveries it does not check against ClickHouse. Give the
			// lease back; a later claim tries again.
			return 0, fmt.Errorf("consumer %s: still pinned by another client after %v", cc.Durable, c.cfg.LeaseTTL+time.Second)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if last := info.Delivered.Stream; last > verify {
		verify = last
		if _, err := c.createConsumer(ctx, cc, verify); err != nil {
			return 0, err
		}
	}
	st, err := c.js.Stream(ctx, event.UsageStream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", event.UsageStream, err)
	}
	if _, err := st.ResetConsumer(ctx, cc.Durable); err != nil {
		return 0, fmt.Errorf("reset consumer %s to its ack floor: %w", cc.Durable, err)
	}
	c.log.Info("took over messages a previous owner left unacked: redelivering them first", "durable", cc.Durable,
		"count", info.NumAckPending)
	return verify, nil
}

// pinned reports whether a client holds the consumer's pin.
func pinned(info *jetstream.ConsumerInfo) bool {
	for _, g := range info.PriorityGroups {
		if g.Group == PriorityGroup && g.PinnedClientID != "" {
			return true
		}
	}
	return false
}

// createConsumer creates or updates a consumer with verify as its verify
// bound.
func (c *Collector) createConsumer(ctx context.Context, cc jetstream.ConsumerConfig, verify uint64) (jetstream.Consumer, error) {
	if verify > 0 {
		cc.Metadata = map[string]string{verifyKey: strconv.FormatUint(verify, 10)}
	}
	cons, err := c.js.CreateOrUpdateConsumer(ctx, event.UsageStream, cc)
	if err != nil {
		return nil, fmt.Errorf("create consumer %s: %w", cc.Durable, err)
	}
	return cons, nil
}

// consumerInfo returns a consumer's info, or nil when it does not exist.
func (c *Collector) consumerInfo(ctx context.Context, durable string) (*jetstream.ConsumerInfo, error) {
	cons, err := c.js.Consumer(ctx, event.UsageStream, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up consumer %s: %w", durable, err)
	}
	info := cons.CachedInfo()
	return info, nil
}

// streamLastSeq returns the usage stream's last sequence.
func (c *Collector) streamLastSeq(ctx context.Context) (uint64, error) {
	s, err := c.js.Stream(ctx, event.UsageStream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", event.UsageStream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", event.UsageStream, err)
	}
	return info.State.LastSeq, nil
}
