package notify

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"
)

// Overflow policies of a sink queue.
const (
	DropOldest = "drop_oldest" // a full queue evicts its oldest alert
	DropNew    = "drop_new"    // a full queue refuses the new alert
)

// Config is the alerts section of the tenantguard config (key `alerts`).
// A sink is on when it is configured: Alertmanager when urls is not empty,
// the webhook when url is set, NATS and ClickHouse when enabled.
type Config struct {
	// QueueSize bounds each sink's queue of pending alerts. Default 1024.
	QueueSize int `mapstructure:"queue_size"`
	// Overflow is what a full queue does: drop_oldest or drop_new. Default drop_oldest.
	Overflow string `mapstructure:"overflow"`
	// DrainTimeout bounds how long shutdown keeps delivering queued alerts. Default 5s.
	DrainTimeout time.Duration `mapstructure:"drain_timeout"`

	Alertmanager AlertmanagerConfig `mapstructure:"alertmanager"`
	Webhook      WebhookConfig      `mapstructure:"webhook"`
	NATS         NATSConfig         `mapstructure:"nats"`
	ClickHouse   ClickHouseConfig   `mapstructure:"clickhouse"`
}

// AlertmanagerConfig configures the Alertmanager API v2 sink.
type AlertmanagerConfig struct {
	// URLs are Alertmanager base URLs, e.g. http://127.0.0.1:9093; every
	// alert goes to each of them. Default empty (sink off).
	URLs []string `mapstructure:"urls"`
	// ResendInterval is how often a firing alert is re-posted. Default 1m.
	ResendInterval time.Duration `mapstructure:"resend_interval"`
	// ResolveTimeout is added to now to set endsAt of a firing alert, so
	// Alertmanager resolves it if tenantguard stops re-posting. It must be
	// longer than resend_interval. Default 4m (4 x resend_interval, as Prometheus does).
	ResolveTimeout time.Duration `mapstructure:"resolve_timeout"`
	// ResolvedRetention is how long a resolved alert keeps being re-posted,
	// so an Alertmanager that was down at resolution time still learns of it. Default 15m.
	ResolvedRetention time.Duration `mapstructure:"resolved_retention"`
	// StaleTimeout, when > 0, forgets a firing alert the detector has not
	// re-sent for this long; Alertmanager then resolves it after
	// resolve_timeout. Set it only if the detector re-sends firing alerts
	// periodically; the tenantguard detector sends transitions only, so the
	// default is 0: a firing alert is re-posted until it resolves.
	StaleTimeout time.Duration `mapstructure:"stale_timeout"`
	// MaxActive bounds the alerts the sink tracks for re-sending. Default 10000.
	MaxActive int `mapstructure:"max_active"`
	// Timeout bounds one HTTP request. Default 10s.
	Timeout time.Duration `mapstructure:"timeout"`
	// MaxRetries is the number of retries after a failed post. Default 3.
	MaxRetries int `mapstructure:"max_retries"`
	// RetryBackoff is the first backoff; it doubles per retry, up to 30s, with full jitter. Default 500ms.
	RetryBackoff time.Duration `mapstructure:"retry_backoff"`
}

// WebhookConfig configures the generic signed webhook sink.
type WebhookConfig struct {
	// URL receives a POST per alert. Default empty (sink off).
	URL string `mapstructure:"url"`
	// Secret keys the HMAC-SHA256 signature; required with url, at least 16 bytes. Never logged. Default empty.
	Secret Secret `mapstructure:"secret"`
	// Timeout bounds one HTTP request. Default 5s.
	Timeout time.Duration `mapstructure:"timeout"`
	// MaxRetries is the number of retries after a failed post. Default 5.
	MaxRetries int `mapstructure:"max_retries"`
	// RetryBackoff is the first backoff; it doubles per retry, up to 30s, with full jitter. Default 500ms.
	RetryBackoff time.Duration `mapstructure:"retry_backoff"`
}

// NATSConfig configures the NATS sink.
type NATSConfig struct {
	// Enabled publishes each alert to tenantguard.alerts.<tenant_id>. Default true.
	Enabled bool `mapstructure:"enabled"`
}

// ClickHouseConfig configures the ClickHouse history sink.
type ClickHouseConfig struct {
	// Enabled writes each alert to the anomalies table. Default true.
	Enabled bool `mapstructure:"enabled"`
	// MaxRetries is the number of retries after a failed insert. Default 3.
	MaxRetries int `mapstructure:"max_retries"`
}

// DefaultConfig returns the defaults documented on each field.
func DefaultConfig() Config {
	return Config{
		QueueSize:    1024,
		Overflow:     DropOldest,
		DrainTimeout: 5 * time.Second,
		Alertmanager: AlertmanagerConfig{
			ResendInterval:    time.Minute,
			ResolveTimeout:    4 * time.Minute,
			ResolvedRetention: 15 * time.Minute,
			MaxActive:         10000,
			Timeout:           10 * time.Second,
			MaxRetries:        3,
			RetryBackoff:      500 * time.Millisecond,
		},
		Webhook: WebhookConfig{
			Timeout:      5 * time.Second,
			MaxRetries:   5,
			RetryBackoff: 500 * time.Millisecond,
		},
		NATS:       NATSConfig{Enabled: true},
		ClickHouse: ClickHouseConfig{Enabled: true, MaxRetries: 3},
	}
}

// maxRetries caps every max_retries setting.
const maxRetries = 20

// Validate reports every bad field, each prefixed with its key path.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("alerts.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if c.QueueSize <= 0 || c.QueueSize > 1<<20 {
		bad("queue_size", "must be in 1..1048576, got %d", c.QueueSize)
	}
	if c.Overflow != DropOldest && c.Overflow != DropNew {
		bad("overflow", "must be %s or %s, got %q", DropOldest, DropNew, c.Overflow)
	}
	if c.DrainTimeout <= 0 {
		bad("drain_timeout", "must be > 0")
	}

	am := c.Alertmanager
	for i, u := range am.URLs {
		if err := checkHTTPURL(u); err != nil {
			bad(fmt.Sprintf("alertmanager.urls[%d]", i), "%v", err)
		}
	}
	if am.ResendInterval <= 0 {
		bad("alertmanager.resend_interval", "must be > 0")
	}
	if am.ResolveTimeout <= am.ResendInterval {
		bad("alertmanager.resolve_timeout", "must be > alertmanager.resend_interval (%s), got %s", am.ResendInterval, am.ResolveTimeout)
	}
	if am.ResolvedRetention < 0 {
		bad("alertmanager.resolved_retention", "must be >= 0")
	}
	if am.StaleTimeout != 0 && am.StaleTimeout <= am.ResendInterval {
		bad("alertmanager.stale_timeout", "must be 0 (off) or > alertmanager.resend_interval (%s), got %s", am.ResendInterval, am.StaleTimeout)
	}
	if am.MaxActive <= 0 {
		bad("alertmanager.max_active", "must be > 0")
	}
	if am.Timeout <= 0 {
		bad("alertmanager.timeout", "must be > 0")
	}
	if am.MaxRetries < 0 || am.MaxRetries > maxRetries {
		bad("alertmanager.max_retries", "must be in 0..%d, got %d", maxRetries, am.MaxRetries)
	}
	if am.RetryBackoff <= 0 {
		bad("alertmanager.retry_backoff", "must be > 0")
	}

	wh := c.Webhook
	if wh.URL != "" {
		if err := checkHTTPURL(wh.URL); err != nil {
			bad("webhook.url", "%v", err)
		}
		if len(wh.Secret) < 16 {
			bad("webhook.secret", "must be at least 16 bytes when webhook.url is set")
		}
	}
	if wh.Timeout <= 0 {
		bad("webhook.timeout", "must be > 0")
	}
	if wh.MaxRetries < 0 || wh.MaxRetries > maxRetries {
		bad("webhook.max_retries", "must be in 0..%d, got %d", maxRetries, wh.MaxRetries)
	}
	if wh.RetryBackoff <= 0 {
		bad("webhook.retry_backoff", "must be > 0")
	}

	if c.ClickHouse.MaxRetries < 0 || c.ClickHouse.MaxRetries > maxRetries {
		bad("clickhouse.max_retries", "must be in 0..%d, got %d", maxRetries, c.ClickHouse.MaxRetries)
	}
	return errors.Join(errs...)
}

// checkHTTPURL accepts absolute http(s) URLs with a host. The error never
// repeats the URL, which may carry credentials.
func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("must be an http:// or https:// URL")
	}
	if u.Host == "" {
		return errors.New("must have a host")
	}
	return nil
}

// Secret is a string that never prints: fmt, slog and JSON show [redacted].
type Secret string

const redacted = "[redacted]"

// String hides the secret.
func (Secret) String() string { return redacted }

// GoString hides the secret from %#v.
func (Secret) GoString() string { return redacted }

// LogValue hides the secret from slog.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON hides the secret from encoding/json.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }
