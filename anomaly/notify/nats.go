package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/collector/event"
)

// HeaderFingerprint and HeaderStatus are set on every NATS alert message.
const (
	HeaderFingerprint = "Tenantguard-Fingerprint"
	HeaderStatus      = "Tenantguard-Status"
)

// NATS publishes each alert as JSON (an anomaly.Alert object) to
// tenantguard.alerts.<tenant_id> with core NATS. The connection belongs to
// the caller; while it is reconnecting nats.go buffers the messages.
type NATS struct {
	nc *nats.Conn
}

var _ Notifier = (*NATS)(nil)

// NewNATS returns a sink publishing on nc.
func NewNATS(nc *nats.Conn) *NATS { return &NATS{nc: nc} }

// Name is "nats".
func (*NATS) Name() string { return "nats" }

// Notify publishes the alerts, then flushes once so a failure is seen here.
func (n *NATS) Notify(ctx context.Context, alerts []anomaly.Alert) (Result, error) {
	var res Result
	var errs []error
	published := 0
	for _, a := range alerts {
		subject := event.PostgresAlertSubject
		if a.Database == "" {
			subject = event.AlertSubject(a.TenantID)
		}
		// A tenant id is a single subject token: no dots, wildcards or spaces.
		if a.Database == "" && !event.ValidTenantID(a.TenantID) {
			res.Failed++
			errs = append(errs, fmt.Errorf("tenant id %q is not a valid subject token", a.TenantID))
			continue
		}
		body, err := json.Marshal(a)
		if err != nil {
			res.Failed++
			errs = append(errs, fmt.Errorf("encode alert: %w", err))
			continue
		}
		msg := nats.NewMsg(subject)
		msg.Data = body
		msg.Header.Set(HeaderFingerprint, a.Fingerprint)
		msg.Header.Set(HeaderStatus, string(a.Status))
		if err := n.nc.PublishMsg(msg); err != nil {
			res.Failed++
			errs = append(errs, fmt.Errorf("publish: %w", err))
			continue
		}
		published++
	}
	if published > 0 && n.nc.IsConnected() {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second) // FlushWithContext needs a deadline
		defer cancel()
		if err := n.nc.FlushWithContext(fctx); err != nil {
			// The messages sit in the client buffer and go out on reconnect.
			errs = append(errs, fmt.Errorf("flush: %w", err))
		}
	}
	res.Sent += published
	return res, errors.Join(errs...)
}
