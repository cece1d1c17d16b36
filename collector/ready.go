package collector

import (
	"errors"
	"fmt"
	"time"
)

// Ready reports why the collector is not doing its job, for readiness
// checks, or nil when it is: it has not started consuming yet (NATS is not
// up), a step fails and is being retried (ClickHouse inserts, stream
// creation), or the consumer is stalled: messages are pending but none was
// fetched or acked for stall_timeout.
func (c *Collector) Ready() error {
	if what := c.failing.Load(); what != nil {
		return fmt.Errorf("collector: %s failing, retrying", *what)
	}
	if !c.consuming.Load() {
		return errors.New("collector: not consuming yet")
	}
	if n := c.pendingMsgs.Load(); n > 0 {
		if idle := time.Since(time.Unix(0, c.lastProgress.Load())); idle > c.cfg.StallTimeout {
			return fmt.Errorf("collector: consumer stalled: %d messages pending, none fetched or acked for %s",
				n, idle.Round(time.Second))
		}
	}
	return nil
}

// progress notes that a message was fetched or a batch acked.
func (c *Collector) progress() { c.lastProgress.Store(time.Now().UnixNano()) }

// pendingEvery is how often the consumer's backlog is read: often enough
// that a stall is seen within a quarter of stall_timeout, at most every 5s.
func (c *Collector) pendingEvery() time.Duration {
	return min(5*time.Second, max(c.cfg.StallTimeout/4, 100*time.Millisecond))
}
