package emit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/tenantguard/tenantguard/collector/event"
)

// Fast batch flow control. Measured on a 2-core machine: an ack every 500
// messages with up to 8 acks outstanding publishes 1.27 times as fast as
// async publish, where the library's defaults (100 and 2) gain nothing.
const (
	fastFlow       = 500
	fastMaxAcks    = 8
	lingerPerBatch = 20              // a batch closes at the latest this many Lingers after it opened
	modeRecheck    = time.Second     // how often the sender looks for a reconnect
	probeTimeout   = 2 * time.Second // for the stream info request
	maxProbeWait   = 5 * time.Minute // between unanswered probes, backing off from 1s; and between probes that said no
	maxFailures    = 3               // batches in a row that confirm nothing before a pause
	failurePause   = time.Minute     // of fast batches, after maxFailures
)

// The server version from which streams accept fast batches.
const fastMajor, fastMinor = 2, 14

// mode is the sender's choice of publishing path. Only the sender
// goroutine touches it.
type mode struct {
	fast       bool
	decided    bool      // the last probe answered
	logged     bool      // the choice was logged once
	next       time.Time // when to look at the connection again
	reconnects uint64    // the connection's reconnect count at the probe
	reprobe    time.Time // when to ask again even without a reconnect
	wait       time.Duration
	failures   int // batches in a row that confirmed nothing
}

// fastMode reports whether to publish the next events in a fast batch. It
// asks the server once, then again after a reconnect, after a failed batch,
// and every 5 minutes while the answer is no. While the question has no
// answer (not connected, no stream yet, no right to read stream info, which
// shows as a timeout) it publishes async and asks again after 1s, 2s, 4s
// and so on up to 5 minutes, so a probe never costs much of the sender's
// time.
func (e *Emitter) fastMode() bool {
	if e.cfg.Batch <= 0 {
		return false
	}
	m := &e.mode
	now := time.Now()
	if now.Before(m.next) {
		return m.fast
	}
	m.next = now.Add(modeRecheck)
	reconnects := e.nc.Stats().Reconnects
	if reconnects != m.reconnects {
		m.reconnects, m.decided, m.wait = reconnects, false, 0
	} else if m.decided && (m.fast || now.Before(m.reprobe)) {
		return m.fast
	} else if !m.decided && now.Before(m.reprobe) {
		return m.fast
	}
	fast, why := e.probe()
	m.decided = !errors.Is(why, errUnanswered)
	if m.decided {
		m.wait = 0
		m.reprobe = now.Add(maxProbeWait)
	} else {
		m.wait = min(max(2*m.wait, time.Second), maxProbeWait)
		m.reprobe = now.Add(m.wait)
	}
	if fast != m.fast || !m.logged {
		m.logged = true
		if fast {
			e.log.Info("publishing through fast batches", "count", e.cfg.Batch)
		} else {
			e.log.Info("publishing with async publish, fast batches unavailable", "err", why)
		}
	}
	m.fast = fast
	e.fast.Store(fast)
	return fast
}

// errUnanswered marks a probe that got no answer, to be asked again.
var errUnanswered = errors.New("emit: no answer yet")

// probe asks whether the usage stream accepts fast batches: the server must
// be 2.14 or later and the stream must have allow_batched. Without the flag
// a fast batch would hang until its ack timeout, so this is asked first.
func (e *Emitter) probe() (bool, error) {
	if !e.nc.IsConnected() {
		return false, fmt.Errorf("%w: not connected", errUnanswered)
	}
	if v := e.nc.ConnectedServerVersion(); !versionAtLeast(v, fastMajor, fastMinor) {
		return false, fmt.Errorf("nats-server %s is older than %d.%d", v, fastMajor, fastMinor)
	}
	ctx, cancel := context.WithTimeout(e.stop, min(probeTimeout, e.cfg.AckTimeout))
	defer cancel()
	s, err := e.js.Stream(ctx, event.UsageStream)
	if err != nil {
		return false, fmt.Errorf("%w: %s: %w", errUnanswered, event.UsageStream, err)
	}
	if !s.CachedInfo().Config.AllowBatchPublish {
		return false, fmt.Errorf("stream %s does not allow batched publishing", event.UsageStream)
	}
	return true, nil
}

// versionAtLeast compares a "major.minor.patch[-pre]" server version.
func versionAtLeast(v string, major, minor int) bool {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return false
	}
	maj, err1 := strconv.Atoi(parts[0])
	mnr, err2 := strconv.Atoi(strings.TrimLeft(parts[1], "v"))
	if err1 != nil || err2 != nil {
		return false
	}
	return maj > major || maj == major && mnr >= minor
}

// sendBatch publishes one fast batch: the events in retry first, then
// queued ones, until it holds cfg.Batch events, the queue has been idle
// for Linger, or the batch is 20 Lingers old. Every event the server
// confirmed is released; the rest come back to be sent again with the same
// Nats-Msg-Id, which the stream's duplicate window makes safe. It returns
// false when the emitter stops.
func (e *Emitter) sendBatch(retry []*pending) ([]*pending, bool) {
	fp, err := jetstreamext.NewFastPublisher(e.js, jetstreamext.FastPublishFlowControl{
		Flow: fastFlow, MaxOutstandingAcks: fastMaxAcks, AckTimeout: e.cfg.AckTimeout,
	})
	if err != nil { // only bad options fail here
		e.log.Error("fast batch publisher", "err", err)
		e.cfg.Batch = 0
		e.fast.Store(false)
		return retry, true
	}
	batch := make([]*pending, 0, min(e.cfg.Batch, e.cfg.BufferSize))
	var acked uint64 // batch sequence up to which the server stored every event
	var failed error
	idle := time.NewTimer(e.cfg.Linger)
	defer idle.Stop()
	var deadline <-chan time.Time
	for len(batch) < e.cfg.Batch {
		var p *pending
		switch {
		case len(retry) > 0:
			p, retry = retry[0], retry[1:]
		case len(batch) == 0:
			if p, _ = e.dequeue(nil, nil); p == nil {
				return retry, false
			}
		default:
			if p, _ = e.fair.pop(time.Now()); p == nil {
				idle.Reset(e.cfg.Linger)
				var ok bool
				if p, ok = e.dequeue(idle.C, deadline); !ok {
					return retry, false
				}
			}
		}
		if p == nil {
			break
		}
		if len(batch) == 0 {
			deadline = time.After(lingerPerBatch * e.cfg.Linger)
		}
		batch = append(batch, p)
		ack, err := fp.AddMsg(p.msg)
		if err != nil {
			failed = fmt.Errorf("fast batch: add event %d: %w", len(batch), err)
			break
		}
		acked = max(acked, ack.AckSequence)
	}
	if failed == nil {
		ctx, cancel := context.WithTimeout(e.stop, e.cfg.AckTimeout)
		ack, err := fp.Close(ctx)
		cancel()
		switch {
		case err != nil:
			failed = fmt.Errorf("fast batch: commit %d events: %w", len(batch), err)
		case ack.BatchSize < uint64(len(batch)):
			// The server ended the batch early at an event it refused.
			failed = fmt.Errorf("fast batch: server stored %d of %d events", ack.BatchSize, len(batch))
			acked = max(acked, ack.BatchSize)
		default:
			acked = uint64(len(batch))
		}
	}
	confirmed := int(min(acked, uint64(len(batch))))
	for _, p := range batch[:confirmed] {
		e.published.Add(1)
		e.release(p)
	}
	if failed == nil {
		e.mode.failures = 0
		return retry, true
	}
	rest := batch[confirmed:]
	e.failN(failed, len(rest))
	m := &e.mode
	m.decided = false // ask the server again: the stream may have changed
	m.next, m.reprobe, m.wait = time.Time{}, time.Time{}, 0
	if confirmed > 0 {
		m.failures = 0
	} else if m.failures++; m.failures >= maxFailures {
		// The stream says yes but batches keep failing: publish async
		// for a while rather than pay a failed batch each time.
		m.failures, m.fast, m.next = 0, false, time.Now().Add(failurePause)
		e.fast.Store(false)
		e.log.Warn("fast batches keep failing, publishing with async publish for a while",
			"count", maxFailures, "duration", failurePause, "err", failed)
	}
	if len(rest) > 0 {
		retry = append(append(make([]*pending, 0, len(rest)+len(retry)), rest...), retry...)
	}
	select {
	case <-time.After(e.cfg.RetryWait):
		return retry, true
	case <-e.done:
		return retry, false
	}
}
