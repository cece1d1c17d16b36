package meter

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/limiter"
)

// Transport returns an http.RoundTripper for calls to one third-party
// integration (a webhook target, a payment API, an LLM API) made on behalf
// of the tenant in each request's context (event.IdentityFrom; the Handler
// puts it there). base does the calls; nil means http.DefaultTransport.
//
// Each call passes through the tenant's circuit breaker for the
// integration, which also honours pushed open_circuit decisions: while it
// is open the call fails fast with a *limiter.CircuitOpenError (or
// limiter.ErrThrottled under an integration-scoped throttle) without
// touching the network. Each call, failed fast or not, is metered as one
// event of Config.Outbound.Kind with route and attrs.integration = the
// integration, the status, the latency to the response headers, and the
// error flag; a call failed fast has attrs.rejected (circuit_open or
// throttled) and no error flag, since the integration did not fail it. A call whose context names no tenant goes through unguarded
// and unmetered, and is counted in tenantguard_meter_untenanted_total.
//
// The integration name follows the limiter's scope rule (1 to 256 bytes,
// no control characters); with an invalid name every call returns an error
// saying so.
func (m *Meter) Transport(integration string, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	t := &transport{m: m, integration: integration, base: base, kind: m.cfg.Outbound.Kind, failed: m.cfg.Outbound.Failed}
	if t.failed == nil {
		t.failed = defaultFailed
	}
	if _, err := limiter.Key("t", limiter.IntegrationScope(integration)); err != nil {
		t.err = fmt.Errorf("meter: transport: integration %q: %w", integration, err)
	}
	return t
}

type transport struct {
	m           *Meter
	integration string
	base        http.RoundTripper
	kind        string
	failed      func(*http.Response, error) bool
	err         error
}

func defaultFailed(resp *http.Response, err error) bool {
	return err != nil || resp.StatusCode >= 500
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.err != nil {
		closeBody(req)
		return nil, t.err
	}
	id, ok := event.IdentityFrom(req.Context())
	if !ok {
		if t.m.meter {
			t.m.stats.untenanted(t.kind).Add(1)
		}
		return t.base.RoundTrip(req)
	}
	start := time.Now()
	rec := Record{Kind: t.kind, Identity: id, Route: t.integration, Time: start}
	rec.Add(String("integration", t.integration))
	guard := t.m.guard
	if guard {
		if err := t.m.lim.Breakers().Allow(id.Tenant, t.integration); err != nil {
			closeBody(req)
			reason := limiter.DeniedThrottled
			if errors.Is(err, limiter.ErrCircuitOpen) {
				reason = limiter.DeniedCircuitOpen
			}
			// Not an error of the integration: a rejection counted as one
			// would keep its error rate up, and its circuit open, forever.
			rec.Latency = time.Since(start)
			rec.Add(String("rejected", reason))
			t.m.Record(&rec)
			return nil, err
		}
	}
	resp, err := t.base.RoundTrip(req)
	failed := t.failed(resp, err)
	if guard {
		var rerr error
		switch {
		case err != nil:
			rerr = err
		case failed:
			rerr = fmt.Errorf("status %d", resp.StatusCode)
		}
		if rerr != nil && errors.Is(req.Context().Err(), context.Canceled) {
			rerr = context.Canceled // the caller gave up: not the integration's failure
		}
		t.m.lim.Breakers().Report(id.Tenant, t.integration, rerr)
	}
	rec.Latency, rec.Error = time.Since(start), failed
	if resp != nil {
		rec.Status = resp.StatusCode
	}
	t.m.Record(&rec)
	return resp, err
}

// closeBody honours the RoundTripper contract on a call that is not made:
// the request body is closed.
func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}
