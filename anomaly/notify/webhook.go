package notify

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/anomaly"
)

// Webhook headers.
const (
	// HeaderSignature carries "sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + body)).
	HeaderSignature = "X-Tenantguard-Signature"
	// HeaderTimestamp carries the Unix time in seconds the signature was made at.
	HeaderTimestamp = "X-Tenantguard-Timestamp"
	// HeaderDelivery is a random id, the same on every retry of one notification.
	HeaderDelivery = "X-Tenantguard-Delivery"
	// signaturePrefix names the scheme in HeaderSignature.
	signaturePrefix = "sha256="
)

// Signature verification errors.
var (
	ErrBadSignature       = errors.New("webhook signature does not match")
	ErrBadTimestamp       = errors.New("webhook timestamp is missing or malformed")
	ErrStaleTimestamp     = errors.New("webhook timestamp is outside the tolerance")
	ErrMalformedSignature = errors.New("webhook signature header is malformed")
)

// Webhook posts each alert as JSON (an anomaly.Alert object) to one URL,
// signed with HMAC-SHA256, retrying with exponential backoff and jitter.
type Webhook struct {
	url    string
	secret []byte
	client *http.Client
	retry  retrier
	now    func() time.Time
}

var _ Notifier = (*Webhook)(nil)

// NewWebhook returns a sink posting to cfg.URL.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if err := checkHTTPURL(cfg.URL); err != nil {
		return nil, fmt.Errorf("alerts.webhook.url: %w", err)
	}
	if len(cfg.Secret) == 0 {
		return nil, errors.New("alerts.webhook.secret: must be set")
	}
	if cfg.Timeout <= 0 {
		return nil, errors.New("alerts.webhook.timeout: must be > 0")
	}
	return &Webhook{
		url:    cfg.URL,
		secret: []byte(cfg.Secret),
		client: newHTTPClient(cfg.Timeout),
		retry:  retrier{retries: cfg.MaxRetries, base: cfg.RetryBackoff},
		now:    time.Now,
	}, nil
}

// Name is "webhook".
func (*Webhook) Name() string { return "webhook" }

// Close releases idle connections.
func (w *Webhook) Close() error {
	w.client.CloseIdleConnections()
	return nil
}

// Notify posts each alert in turn. A 2xx answer is success; transport
// errors, 5xx, 408 and 429 are retried; other answers fail at once.
func (w *Webhook) Notify(ctx context.Context, alerts []anomaly.Alert) (Result, error) {
	var res Result
	var errs []error
	for i, a := range alerts {
		if ctx.Err() != nil {
			res.Failed += len(alerts) - i
			errs = append(errs, ctx.Err())
			break
		}
		body, err := json.Marshal(a)
		if err != nil {
			res.Failed++
			errs = append(errs, fmt.Errorf("encode alert: %w", err))
			continue
		}
		delivery := newDeliveryID()
		retries, err := w.retry.do(ctx, func(ctx context.Context) error {
			ts := w.now().Unix()
			h := http.Header{}
			h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
			h.Set(HeaderSignature, Sign(w.secret, ts, body))
			h.Set(HeaderDelivery, delivery)
			return postJSON(ctx, w.client, w.url, body, h)
		})
		res.Retries += retries
		if err != nil {
			res.Failed++
			errs = append(errs, fmt.Errorf("webhook tenant %s: %w", a.TenantID, err))
			continue
		}
		res.Sent++
	}
	return res, errors.Join(errs...)
}

func newDeliveryID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Sign returns the HeaderSignature value for body sent at timestamp (Unix
// seconds): "sha256=" + hex(HMAC-SHA256(secret, "<timestamp>.<body>")).
func Sign(secret []byte, timestamp int64, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(strconv.AppendInt(nil, timestamp, 10))
	m.Write([]byte{'.'})
	m.Write(body)
	return signaturePrefix + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature checks a webhook request as a receiver should: the
// timestamp is within tolerance of now (which stops replays) and the
// signature is the HMAC of "<timestamp>.<body>" under secret, compared in
// constant time. Pass the raw header values and the raw body bytes.
func VerifySignature(secret []byte, timestamp, signature string, body []byte, now time.Time, tolerance time.Duration) error {
	if len(timestamp) == 0 || len(timestamp) > 12 {
		return ErrBadTimestamp
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil || ts < 0 || strconv.FormatInt(ts, 10) != timestamp {
		return ErrBadTimestamp
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return ErrStaleTimestamp
	}
	hexSig, ok := strings.CutPrefix(signature, signaturePrefix)
	if !ok || len(hexSig) != 2*sha256.Size {
		return ErrMalformedSignature
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return ErrMalformedSignature
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	if !hmac.Equal(got, m.Sum(nil)) {
		return ErrBadSignature
	}
	return nil
}
