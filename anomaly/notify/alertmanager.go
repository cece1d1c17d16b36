package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tenantguard/tenantguard/anomaly"
)

// Alertnames per metric: routes and silences in Alertmanager match on
// them. Every alert also carries a metric label.
var alertnames = map[string]string{
	anomaly.MetricUsage:       "TenantguardUsageSpike",
	anomaly.MetricLatencyP95:  "TenantguardLatencyRegression",
	anomaly.MetricErrorRate:   "TenantguardErrorRateSpike",
	anomaly.MetricCost:        "TenantguardCostSpike",
	anomaly.MetricSpendCap:    "TenantguardSpendCap",
	anomaly.MetricHeavyTenant: "TenantguardHeavyTenant",
}

// AlertnameOther is the alertname of a metric without its own name.
const AlertnameOther = "TenantguardAnomaly"

// Alertname returns the Alertmanager alertname of metric.
func Alertname(metric string) string {
	if n, ok := alertnames[metric]; ok {
		return n
	}
	return AlertnameOther
}

// Alertmanager posts alerts to the Alertmanager API v2 of one or more
// Alertmanagers, and re-posts them following Alertmanager's resend
// semantics. It is used by one goroutine (the Fanout worker).
type Alertmanager struct {
	cfg       AlertmanagerConfig
	endpoints []string
	client    *http.Client
	retry     retrier
	active    map[string]*amEntry // by fingerprint
	now       func() time.Time
}

type amEntry struct {
	alert      anomaly.Alert
	lastUpdate time.Time // last time the detector sent it
	lastSent   time.Time // last time one Alertmanager accepted it
	resolvedAt time.Time // when the resolution arrived; zero while firing
	pending    bool      // new or changed and not yet accepted
}

var (
	_ Notifier = (*Alertmanager)(nil)
	_ Resender = (*Alertmanager)(nil)
)

// NewAlertmanager returns a sink posting to cfg.URLs.
func NewAlertmanager(cfg AlertmanagerConfig) (*Alertmanager, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("alerts.alertmanager.urls: at least one URL is required")
	}
	am := &Alertmanager{
		cfg:    cfg,
		client: newHTTPClient(cfg.Timeout),
		retry:  retrier{retries: cfg.MaxRetries, base: cfg.RetryBackoff},
		active: make(map[string]*amEntry),
		now:    time.Now,
	}
	for i, raw := range cfg.URLs {
		if err := checkHTTPURL(raw); err != nil {
			return nil, fmt.Errorf("alerts.alertmanager.urls[%d]: %w", i, err)
		}
		u, _ := url.Parse(raw)
		if !strings.HasSuffix(strings.TrimRight(u.Path, "/"), "/api/v2/alerts") {
			u = u.JoinPath("api", "v2", "alerts")
		}
		am.endpoints = append(am.endpoints, u.String())
	}
	return am, nil
}

// Name is "alertmanager".
func (*Alertmanager) Name() string { return "alertmanager" }

// ResendEvery is how often the Fanout calls Resend: a quarter of the
// resend interval, at most 15s, so failed posts are retried soon.
func (am *Alertmanager) ResendEvery() time.Duration {
	return min(am.cfg.ResendInterval/4+time.Millisecond, 15*time.Second)
}

// Close releases idle connections.
func (am *Alertmanager) Close() error {
	am.client.CloseIdleConnections()
	return nil
}

// Notify records the alerts and posts those that are new, changed status,
// or are due for a resend. A firing alert the detector repeats within the
// resend interval is not posted again.
func (am *Alertmanager) Notify(ctx context.Context, alerts []anomaly.Alert) (Result, error) {
	now := am.now()
	var due []*amEntry
	var refused int
	for _, a := range alerts {
		e, ok := am.active[a.Fingerprint]
		if !ok {
			if len(am.active) >= am.cfg.MaxActive {
				am.expire(now)
			}
			e = &amEntry{pending: true}
			if len(am.active) < am.cfg.MaxActive {
				am.active[a.Fingerprint] = e
			} else if a.Status == anomaly.StatusFiring {
				refused++
				continue
			} // a resolution is still posted once, untracked
		} else if e.alert.Status != a.Status {
			e.pending = true
		}
		e.alert = a
		e.lastUpdate = now
		if a.Status == anomaly.StatusResolved {
			if e.resolvedAt.IsZero() {
				e.resolvedAt = now
			}
		} else {
			e.resolvedAt = time.Time{}
		}
		if e.pending || now.Sub(e.lastSent) >= am.cfg.ResendInterval {
			due = appendUnique(due, e)
		}
	}
	res, err := am.post(ctx, now, due)
	if refused > 0 {
		res.Failed += refused
		err = errors.Join(err, fmt.Errorf("%d firing alerts refused: alerts.alertmanager.max_active (%d) reached", refused, am.cfg.MaxActive))
	}
	return res, err
}

func appendUnique(list []*amEntry, e *amEntry) []*amEntry {
	for _, x := range list {
		if x == e {
			return list
		}
	}
	return append(list, e)
}

// Resend posts every alert that is pending or due, and forgets resolved
// alerts past their retention and, with a stale timeout, firing alerts the
// detector stopped sending (Alertmanager then resolves them at their endsAt).
func (am *Alertmanager) Resend(ctx context.Context, now time.Time) (Result, error) {
	now = am.now()
	am.expire(now)
	var due []*amEntry
	for _, e := range am.active {
		if e.pending || now.Sub(e.lastSent) >= am.cfg.ResendInterval {
			due = append(due, e)
		}
	}
	return am.post(ctx, now, due)
}

func (am *Alertmanager) expire(now time.Time) {
	for fp, e := range am.active {
		if !e.resolvedAt.IsZero() {
			if now.Sub(e.resolvedAt) >= am.cfg.ResolvedRetention {
				delete(am.active, fp)
			}
		} else if am.cfg.StaleTimeout > 0 && now.Sub(e.lastUpdate) >= am.cfg.StaleTimeout {
			delete(am.active, fp)
		}
	}
}

// Active returns how many alerts the sink tracks for re-sending.
func (am *Alertmanager) Active() int { return len(am.active) }

// post sends entries to every Alertmanager. An entry accepted by at least
// one of them is no longer pending. Each (alert, Alertmanager) pair counts
// as one delivery in the Result.
func (am *Alertmanager) post(ctx context.Context, now time.Time, entries []*amEntry) (Result, error) {
	var res Result
	if len(entries) == 0 {
		return res, nil
	}
	payload := make([]amAlert, len(entries))
	for i, e := range entries {
		payload[i] = am.toAM(e.alert, now)
	}
	body, err := json.Marshal(payload)
	if err != nil {
		res.Failed = len(entries) * len(am.endpoints)
		return res, fmt.Errorf("encode alerts: %w", err)
	}
	var errs []error
	accepted := false
	for i, ep := range am.endpoints {
		retries, err := am.retry.do(ctx, func(ctx context.Context) error {
			return postJSON(ctx, am.client, ep, body, nil)
		})
		res.Retries += retries
		if err != nil {
			res.Failed += len(entries)
			errs = append(errs, fmt.Errorf("alertmanager %d: %w", i, err))
			continue
		}
		res.Sent += len(entries)
		accepted = true
	}
	if accepted {
		for _, e := range entries {
			e.pending = false
			e.lastSent = now
		}
	}
	return res, errors.Join(errs...)
}

// amAlert is a postableAlert of the Alertmanager API v2.
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// toAM maps an alert to Alertmanager labels and annotations. A firing
// alert ends at now + resolve timeout; a resolved one at its EndsAt.
func (am *Alertmanager) toAM(a anomaly.Alert, now time.Time) amAlert {
	labels := make(map[string]string, 6+len(a.Labels))
	for k, v := range a.Labels { // extra labels first: they never override the core ones
		if labelName.MatchString(k) && !strings.HasPrefix(k, "__") && v != "" && utf8.ValidString(v) {
			labels[k] = v
		}
	}
	set := func(k, v string) {
		if v != "" {
			labels[k] = strings.ToValidUTF8(v, "\uFFFD")
		} else {
			delete(labels, k)
		}
	}
	set("alertname", Alertname(a.Metric))
	set("tenant", a.TenantID)
	set("database", a.Database)
	set("metric", a.Metric)
	set("severity", string(a.Severity))
	set("kind", a.Kind)
	set("integration", a.Integration)

	ends := now.Add(am.cfg.ResolveTimeout)
	if a.Status == anomaly.StatusResolved {
		ends = a.EndsAt
	}
	if ends.Before(a.StartsAt) {
		ends = a.StartsAt
	}
	return amAlert{
		Labels: labels,
		Annotations: map[string]string{
			"summary":     strings.ToValidUTF8(a.Summary, "\uFFFD"),
			"observed":    strconv.FormatFloat(a.Observed, 'g', 6, 64),
			"baseline":    strconv.FormatFloat(a.Baseline, 'g', 6, 64),
			"ratio":       strconv.FormatFloat(a.Ratio, 'g', 4, 64),
			"fingerprint": a.Fingerprint,
		},
		StartsAt: a.StartsAt.UTC(),
		EndsAt:   ends.UTC(),
	}
}
