package notify

import (
	"io"
	"log/slog"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// testAlert returns a firing usage alert for tenant.
func testAlert(tenant string) anomaly.Alert {
	start := time.Now().Add(-time.Minute).Truncate(time.Second)
	return anomaly.Alert{
		Fingerprint: anomaly.Fingerprint(tenant, anomaly.MetricUsage, "api_request", "", start),
		TenantID:    tenant,
		Metric:      anomaly.MetricUsage,
		Kind:        "api_request",
		Status:      anomaly.StatusFiring,
		Severity:    anomaly.SeverityWarning,
		Observed:    930,
		Baseline:    300,
		Ratio:       3.1,
		StartsAt:    start,
		Summary:     "api_request rate of " + tenant + " is 3.1x its baseline",
	}
}

// resolved returns a resolved at now.
func resolved(a anomaly.Alert) anomaly.Alert {
	a.Status = anomaly.StatusResolved
	a.EndsAt = time.Now().Truncate(time.Second)
	return a
}

// testConfig returns a config with every sink off.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.NATS.Enabled = false
	cfg.ClickHouse.Enabled = false
	return cfg
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// start builds a Fanout on a fresh registry and runs it until the test ends.
func start(t *testing.T, cfg Config, deps Deps) (*Fanout, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	deps.Registerer = reg
	if deps.Logger == nil {
		deps.Logger = quietLogger()
	}
	f, err := New(cfg, deps)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	testenv.RunStage(t, "fanout", f.Run)
	return f, reg
}

func itoa(i int) string { return strconv.Itoa(i) }

const maxFloat = math.MaxFloat64

func posInf() float64 { return math.Inf(1) }
