package notify

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigIsValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate(): %v", err)
	}
}

func TestValidateNamesEveryBadField(t *testing.T) {
	cfg := DefaultConfig()
	cfg.QueueSize = 0
	cfg.Overflow = "block"
	cfg.DrainTimeout = 0
	cfg.Alertmanager.URLs = []string{"http://ok:9093", "alertmanager:9093"}
	cfg.Alertmanager.ResendInterval = time.Minute
	cfg.Alertmanager.ResolveTimeout = 30 * time.Second
	cfg.Alertmanager.StaleTimeout = time.Second
	cfg.Alertmanager.MaxRetries = -1
	cfg.Webhook.URL = "https://hooks.example.com/x"
	cfg.Webhook.Secret = ""
	cfg.Webhook.Timeout = 0
	cfg.Webhook.MaxRetries = 99
	cfg.ClickHouse.MaxRetries = -2
	err := cfg.Validate()
	if err == nil {
		t.Fatal("got nil, want errors")
	}
	for _, field := range []string{
		"alerts.queue_size:", "alerts.overflow:", "alerts.drain_timeout:",
		"alerts.alertmanager.urls[1]:", "alerts.alertmanager.resolve_timeout:", "alerts.alertmanager.stale_timeout:",
		"alerts.alertmanager.max_retries:", "alerts.webhook.secret:", "alerts.webhook.timeout:",
		"alerts.webhook.max_retries:", "alerts.clickhouse.max_retries:",
	} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s:\n%v", field, err)
		}
	}
	if strings.Contains(err.Error(), "urls[0]") {
		t.Errorf("a valid URL was reported: %v", err)
	}
}
