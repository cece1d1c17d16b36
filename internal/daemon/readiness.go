package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/tenantguard/tenantguard/collector"
)

// readiness is what the daemon's /readyz reports besides the API's own
// ClickHouse ping: the NATS connection, start-up (the schema migration, the
// wait for JetStream) and the collector. Each check's error is one line of
// the answer.
type readiness struct {
	nc        *nats.Conn
	phase     atomic.Pointer[string]              // what start-up waits for; nil once every stage runs
	collector atomic.Pointer[collector.Collector] // nil while it is off or not built yet
}

func newReadiness(nc *nats.Conn) *readiness {
	r := &readiness{nc: nc}
	r.waitingFor("the stages to start")
	return r
}

// waitingFor records what start-up waits for.
func (r *readiness) waitingFor(what string) { r.phase.Store(&what) }

// started records that every stage runs.
func (r *readiness) started() { r.phase.Store(nil) }

func (r *readiness) checks() []func(context.Context) error {
	return []func(context.Context) error{r.checkNATS, r.checkStart, r.checkCollector}
}

func (r *readiness) checkNATS(context.Context) error {
	if st := r.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("nats: not connected (%s)", strings.ToLower(st.String()))
	}
	return nil
}

func (r *readiness) checkStart(context.Context) error {
	if p := r.phase.Load(); p != nil {
		return errors.New("starting: waiting for " + *p)
	}
	return nil
}

func (r *readiness) checkCollector(context.Context) error {
	if c := r.collector.Load(); c != nil {
		return c.Ready()
	}
	return nil
}
