package emit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
)

// ErrNotConfirmed means a correction request is stored in JetStream but no
// daemon answered before the context ended: it will be applied when one
// runs. Sending the same corrections again (same ids) is safe and returns
// their outcome, reported as duplicate once applied.
var ErrNotConfirmed = errors.New("emit: correction stored, but no daemon confirmed it yet")

// Correct voids or amends stored events. It publishes the corrections,
// grouped by tenant, on tenantguard.corrections.<tenant_id> and waits for
// the daemon's outcome, which has one result per correction, in order:
// applied, duplicate (an id applied before), or refused with a reason. A
// correction without an ID gets one. An error means no outcome is known
// for the corrections from the first unconfirmed request on (their results
// are then zero values); ErrNotConfirmed says they are queued.
func (e *Emitter) Correct(ctx context.Context, cs ...event.Correction) ([]event.CorrectionResult, error) {
	return Correct(ctx, e.js, cs...)
}

// Correct is Emitter.Correct for callers that hold only a JetStream
// context, such as the CLI.
func Correct(ctx context.Context, js jetstream.JetStream, cs ...event.Correction) ([]event.CorrectionResult, error) {
	results := make([]event.CorrectionResult, len(cs))
	for i := range cs {
		if cs[i].ID == "" {
			cs[i].ID = newCorrectionID()
		}
		if verr := event.ValidateCorrection(&cs[i]); verr != nil {
			return nil, fmt.Errorf("emit: correction %d: %w", i, verr)
		}
	}
	// Requests keep the callers' order within each tenant.
	byTenant := map[string][]int{}
	var tenants []string
	for i := range cs {
		t := cs[i].TenantID
		if _, ok := byTenant[t]; !ok {
			tenants = append(tenants, t)
		}
		byTenant[t] = append(byTenant[t], i)
	}
	for _, t := range tenants {
		idx := byTenant[t]
		for start := 0; start < len(idx); {
			chunk, err := requestChunk(cs, idx[start:])
			if err != nil {
				return results, err
			}
			req := event.CorrectionRequest{Corrections: make([]event.Correction, len(chunk))}
			for j, k := range chunk {
				req.Corrections[j] = cs[k]
			}
			reply, err := request(ctx, js, t, &req)
			if err != nil {
				return results, err
			}
			if reply.Error != "" {
				return results, fmt.Errorf("emit: correction request refused: %s", reply.Error)
			}
			if len(reply.Results) != len(chunk) {
				return results, fmt.Errorf("emit: correction reply has %d results for %d corrections", len(reply.Results), len(chunk))
			}
			for j, k := range chunk {
				results[k] = reply.Results[j]
			}
			start += len(chunk)
		}
	}
	return results, nil
}

// requestChunk returns the leading indexes of idx that fit one request.
func requestChunk(cs []event.Correction, idx []int) ([]int, error) {
	size := 32
	n := 0
	for n < len(idx) && n < event.MaxCorrectionsPerRequest {
		b, err := json.Marshal(&cs[idx[n]])
		if err != nil {
			return nil, fmt.Errorf("emit: encode correction: %w", err)
		}
		if size+len(b)+1 > event.MaxCorrectionRequestSize {
			break
		}
		size += len(b) + 1
		n++
	}
	return idx[:n], nil
}

// request publishes one request to the corrections stream and waits for the
// daemon's reply on a private inbox.
func request(ctx context.Context, js jetstream.JetStream, tenant string, req *event.CorrectionRequest) (event.CorrectionReply, error) {
	var reply event.CorrectionReply
	body, err := json.Marshal(req)
	if err != nil {
		return reply, fmt.Errorf("emit: encode corrections: %w", err)
	}
	nc := js.Conn()
	inbox := nats.NewInbox() // under _INBOX., the only prefix the daemon replies to
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return reply, fmt.Errorf("emit: subscribe for the correction reply: %w", err)
	}
	defer sub.Unsubscribe()
	msg := nats.NewMsg(event.CorrectionSubject(tenant))
	msg.Data = body
	msg.Header.Set(event.HeaderReply, inbox)
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			return reply, fmt.Errorf("emit: no stream %s takes corrections: start `tenantguard run` (it creates the stream): %w", event.CorrectionsStream, err)
		}
		return reply, fmt.Errorf("emit: publish corrections: %w", err)
	}
	m, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		return reply, fmt.Errorf("%w: %v", ErrNotConfirmed, err)
	}
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		return reply, fmt.Errorf("emit: decode correction reply: %w", err)
	}
	return reply, nil
}

func newCorrectionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "c" + hex.EncodeToString(b[:])
}
