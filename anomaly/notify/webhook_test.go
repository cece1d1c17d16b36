package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

const testSecret = "s3cr3t-0123456789abcdef"

// receiver is a webhook endpoint that verifies signatures the way the
// docs tell users to, and can fail the first requests with 500.
type receiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	fail500  int // answer 500 to this many more requests
	attempts int // requests received
	rejected int // requests with a bad signature
	alerts   []anomaly.Alert
	delivery []string // HeaderDelivery of every request
}

func newReceiver(t *testing.T, secret string) *receiver {
	rc := &receiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "read", http.StatusBadRequest)
			return
		}
		rc.mu.Lock()
		defer rc.mu.Unlock()
		rc.attempts++
		rc.delivery = append(rc.delivery, r.Header.Get(HeaderDelivery))
		err = VerifySignature([]byte(secret), r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature), body, time.Now(), 5*time.Minute)
		if err != nil {
			rc.rejected++
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		if rc.fail500 > 0 {
			rc.fail500--
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		var a anomaly.Alert
		if err := json.Unmarshal(body, &a); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rc.alerts = append(rc.alerts, a)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) snapshot() (attempts, rejected int, alerts []anomaly.Alert, delivery []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.attempts, rc.rejected, append([]anomaly.Alert(nil), rc.alerts...), append([]string(nil), rc.delivery...)
}

func webhookConfig(url, secret string) Config {
	cfg := testConfig()
	cfg.Webhook.URL = url
	cfg.Webhook.Secret = Secret(secret)
	cfg.Webhook.RetryBackoff = 10 * time.Millisecond
	cfg.Webhook.MaxRetries = 3
	cfg.Webhook.Timeout = 2 * time.Second
	return cfg
}

func TestWebhookSignedDelivery(t *testing.T) {
	rc := newReceiver(t, testSecret)
	f, reg := start(t, webhookConfig(rc.srv.URL, testSecret), Deps{})
	a := testAlert("acme")
	f.Send(context.Background(), a)
	f.Send(context.Background(), resolved(a))
	testenv.Eventually(t, 5*time.Second, "webhook did not receive 2 alerts", func() bool {
		_, _, alerts, _ := rc.snapshot()
		return len(alerts) == 2
	})
	_, rejected, alerts, _ := rc.snapshot()
	if rejected != 0 {
		t.Errorf("rejected: got %d, want 0", rejected)
	}
	got := alerts[0]
	if got.Fingerprint != a.Fingerprint || got.TenantID != "acme" || got.Status != anomaly.StatusFiring ||
		got.Ratio != a.Ratio || !got.StartsAt.Equal(a.StartsAt) {
		t.Errorf("first alert: got %+v, want %+v", got, a)
	}
	if alerts[1].Status != anomaly.StatusResolved || alerts[1].EndsAt.IsZero() {
		t.Errorf("second alert: got status %s ends %s, want resolved with ends_at", alerts[1].Status, alerts[1].EndsAt)
	}
	if s := testenv.MetricValue(t, reg, "tenantguard_notifier_sent_total", "sink", "webhook"); s != 2 {
		t.Errorf("sent_total{webhook}: got %v, want 2", s)
	}
}

func TestWebhookBadSecretIsRejectedNotRetried(t *testing.T) {
	rc := newReceiver(t, testSecret)
	f, reg := start(t, webhookConfig(rc.srv.URL, "another-secret-of-16+"), Deps{})
	f.Send(context.Background(), testAlert("acme"))
	testenv.Eventually(t, 5*time.Second, "failure not counted", func() bool {
		return testenv.MetricValue(t, reg, "tenantguard_notifier_failures_total", "sink", "webhook") == 1
	})
	attempts, rejected, alerts, _ := rc.snapshot()
	if attempts != 1 || rejected != 1 || len(alerts) != 0 {
		t.Errorf("bad signature: got %d attempts, %d rejected, %d accepted; want 1, 1, 0 (a 401 is not retried)", attempts, rejected, len(alerts))
	}
}

func TestWebhookRetriesOn500(t *testing.T) {
	rc := newReceiver(t, testSecret)
	rc.fail500 = 2
	f, reg := start(t, webhookConfig(rc.srv.URL, testSecret), Deps{})
	f.Send(context.Background(), testAlert("acme"))
	testenv.Eventually(t, 5*time.Second, "alert not delivered after 500s", func() bool {
		_, _, alerts, _ := rc.snapshot()
		return len(alerts) == 1
	})
	attempts, _, _, delivery := rc.snapshot()
	if attempts != 3 {
		t.Errorf("attempts: got %d, want 3 (two 500s, then 200)", attempts)
	}
	for _, d := range delivery {
		if d != delivery[0] || len(d) != 24 {
			t.Errorf("delivery ids: got %q, want one 24-hex id on every retry", delivery)
			break
		}
	}
	if r := testenv.MetricValue(t, reg, "tenantguard_notifier_retries_total", "sink", "webhook"); r != 2 {
		t.Errorf("retries_total: got %v, want 2", r)
	}
	if s := testenv.MetricValue(t, reg, "tenantguard_notifier_sent_total", "sink", "webhook"); s != 1 {
		t.Errorf("sent_total: got %v, want 1", s)
	}
}

func TestWebhookGivesUpAfterMaxRetries(t *testing.T) {
	rc := newReceiver(t, testSecret)
	rc.fail500 = 100
	cfg := webhookConfig(rc.srv.URL, testSecret)
	cfg.Webhook.MaxRetries = 2
	f, reg := start(t, cfg, Deps{})
	f.Send(context.Background(), testAlert("acme"))
	testenv.Eventually(t, 5*time.Second, "failure not counted", func() bool {
		return testenv.MetricValue(t, reg, "tenantguard_notifier_failures_total", "sink", "webhook") == 1
	})
	if attempts, _, _, _ := rc.snapshot(); attempts != 3 {
		t.Errorf("attempts: got %d, want 3 (1 + max_retries 2)", attempts)
	}
}

func TestWebhookTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	cfg := webhookConfig(srv.URL, testSecret).Webhook
	cfg.Timeout = 100 * time.Millisecond
	cfg.MaxRetries = 1
	wh, err := NewWebhook(cfg)
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	res, err := wh.Notify(context.Background(), []anomaly.Alert{testAlert("acme")})
	if err == nil || res.Failed != 1 || res.Retries != 1 {
		t.Errorf("hanging receiver: got %+v, err %v; want 1 failed after 1 retry", res, err)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Errorf("two attempts with a 100ms timeout took %s", d)
	}
	if err != nil && strings.Contains(err.Error(), srv.URL) {
		t.Errorf("error repeats the webhook URL: %v", err)
	}
}

func TestVerifySignature(t *testing.T) {
	secret := []byte(testSecret)
	body := []byte(`{"tenant_id":"acme"}`)
	now := time.Unix(1_800_000_000, 0)
	ts := strconv.FormatInt(now.Unix(), 10)
	sig := Sign(secret, now.Unix(), body)
	tests := []struct {
		name    string
		secret  []byte
		ts, sig string
		body    []byte
		want    error
	}{
		{"valid", secret, ts, sig, body, nil},
		{"wrong secret", []byte("other"), ts, sig, body, ErrBadSignature},
		{"tampered body", secret, ts, sig, []byte(`{"tenant_id":"evil"}`), ErrBadSignature},
		{"timestamp changed", secret, strconv.FormatInt(now.Unix()+1, 10), sig, body, ErrBadSignature},
		{"stale", secret, strconv.FormatInt(now.Unix()-600, 10), Sign(secret, now.Unix()-600, body), body, ErrStaleTimestamp},
		{"future", secret, strconv.FormatInt(now.Unix()+600, 10), Sign(secret, now.Unix()+600, body), body, ErrStaleTimestamp},
		{"no timestamp", secret, "", sig, body, ErrBadTimestamp},
		{"signed timestamp", secret, "+" + ts, sig, body, ErrBadTimestamp},
		{"no prefix", secret, ts, strings.TrimPrefix(sig, "sha256="), body, ErrMalformedSignature},
		{"short", secret, ts, sig[:20], body, ErrMalformedSignature},
		{"not hex", secret, ts, "sha256=" + strings.Repeat("zz", 32), body, ErrMalformedSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifySignature(tt.secret, tt.ts, tt.sig, tt.body, now, 5*time.Minute)
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
	// The documented scheme, computed independently: HMAC-SHA256 over "<ts>.<body>".
	m := hmac.New(sha256.New, []byte("key"))
	m.Write([]byte("1.{}"))
	if got, want := Sign([]byte("key"), 1, []byte("{}")), "sha256="+hex.EncodeToString(m.Sum(nil)); got != want {
		t.Errorf("Sign: got %q, want %q", got, want)
	}
}

func FuzzVerifySignature(f *testing.F) {
	secret := []byte(testSecret)
	now := time.Unix(1_800_000_000, 0)
	f.Add("1800000000", Sign(secret, now.Unix(), []byte("{}")), []byte("{}"))
	f.Add("", "", []byte(nil))
	f.Add("-1", "sha256=", []byte("x"))
	f.Add("99999999999999999999", "sha256="+strings.Repeat("0", 64), []byte("{}"))
	f.Fuzz(func(t *testing.T, ts, sig string, body []byte) {
		err := VerifySignature(secret, ts, sig, body, now, 5*time.Minute)
		if err == nil {
			// Only a real signature over exactly this timestamp and body passes.
			n, perr := strconv.ParseInt(ts, 10, 64)
			if perr != nil || Sign(secret, n, body) != sig {
				t.Fatalf("accepted a forged request: ts=%q sig=%q", ts, sig)
			}
		}
	})
}

func TestSecretNeverPrinted(t *testing.T) {
	cfg := webhookConfig("https://hooks.example.com/x", testSecret)
	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("config", "webhook", cfg.Webhook, "secret", cfg.Webhook.Secret)
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string]string{
		"%v": fmt.Sprintf("%v", cfg), "%+v": fmt.Sprintf("%+v", cfg), "%#v": fmt.Sprintf("%#v", cfg),
		"%s": fmt.Sprintf("%s", cfg.Webhook.Secret), "slog": logBuf.String(), "json": string(js),
	} {
		if strings.Contains(out, testSecret) {
			t.Errorf("%s prints the secret: %s", name, out)
		}
	}
}

func TestValidateNeverEchoesSecretOrURL(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Webhook.URL = "ftp://user:pw-0123456789@x"
	cfg.Webhook.Secret = "tiny-secret"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("got nil, want errors for webhook.url and webhook.secret")
	}
	for _, leak := range []string{"tiny-secret", "pw-0123456789"} {
		if strings.Contains(err.Error(), leak) {
			t.Errorf("Validate error leaks %q: %v", leak, err)
		}
	}
}
