package daemon

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/anomaly/advisor"
	"github.com/tenantguard/tenantguard/anomaly/decide"
	"github.com/tenantguard/tenantguard/anomaly/notify"
	"github.com/tenantguard/tenantguard/collector"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/pgstat"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/exporter/api"
	"github.com/tenantguard/tenantguard/exporter/billing"
	"github.com/tenantguard/tenantguard/exporter/metrics"
	"github.com/tenantguard/tenantguard/internal/redact"
)

// Config is the whole configuration; each section belongs to one stage.
type Config struct {
	NATS       NATSConfig           `mapstructure:"nats"`
	ClickHouse store.Config         `mapstructure:"clickhouse"`
	Metrics    MetricsConfig        `mapstructure:"metrics"`
	API        api.Config           `mapstructure:"api"`
	Billing    billing.Config       `mapstructure:"billing"`
	Collector  CollectorConfig      `mapstructure:"collector"`
	Pricing    pricing.Config       `mapstructure:"pricing"`
	Anomaly    AnomalyConfigSection `mapstructure:"anomaly"`
	Advisor    AdvisorConfig        `mapstructure:"advisor"`
	Alerts     notify.Config        `mapstructure:"alerts"`
	Decisions  DecisionsConfig      `mapstructure:"decisions"`
	Exporter   ExporterConfig       `mapstructure:"exporter"`
	PGStat     PGStatConfig         `mapstructure:"pgstat"`
	Log        LogConfig            `mapstructure:"log"`
}

// NATSConfig says how to reach NATS.
type NATSConfig struct {
	// URL lists servers, comma-separated. Default nats://127.0.0.1:4222.
	URL string `mapstructure:"url"`
	// CredsFile is a NATS .creds file. Default none.
	CredsFile string `mapstructure:"creds_file"`
	// TLS client settings. Default none.
	TLS struct {
		CAFile   string `mapstructure:"ca_file"`
		CertFile string `mapstructure:"cert_file"`
		KeyFile  string `mapstructure:"key_file"`
	} `mapstructure:"tls"`
	// Name identifies this client to the server. Default "tenantguard".
	Name string `mapstructure:"name"`
}

// MetricsConfig is the Prometheus listener.
type MetricsConfig struct {
	// Listen serves /metrics. Default ":9464".
	Listen string `mapstructure:"listen"`
}

// AnomalyConfigSection switches the anomaly detector; its keys sit beside it.
type AnomalyConfigSection struct {
	// Enabled runs the stage in `tenantguard run`. Default true.
	Enabled        bool `mapstructure:"enabled"`
	anomaly.Config `mapstructure:",squash"`
}

// CollectorConfig switches the collector; its keys sit beside it.
type CollectorConfig struct {
	// Enabled runs the stage in `tenantguard run`. Default true.
	Enabled          bool `mapstructure:"enabled"`
	collector.Config `mapstructure:",squash"`
}

// PGStatConfig switches the Postgres auditor; its keys sit beside it.
type PGStatConfig struct {
	// Enabled runs the stage in `tenantguard run`. Default false.
	Enabled       bool `mapstructure:"enabled"`
	pgstat.Config `mapstructure:",squash"`
}

// ExporterConfig switches the exporter stage; the metrics keys sit beside it.
type ExporterConfig struct {
	// Enabled runs the stage in `tenantguard run`. Default true.
	Enabled        bool `mapstructure:"enabled"`
	metrics.Config `mapstructure:",squash"`
}

// DecisionsConfig switches the decision engine; its policy keys sit beside it.
type DecisionsConfig struct {
	// Enabled turns anomalies and spend caps into throttle and circuit
	// decisions (needs anomaly.enabled). Default true.
	Enabled bool `mapstructure:"enabled"`
	// Replicas of the buckets tenantguard_decisions and tenantguard_limiters
	// in a NATS cluster, 1 to 5. `run` and `migrate` create the buckets
	// with it whether or not the engine runs, and never lower an existing
	// bucket's count. Default 1.
	Replicas      int `mapstructure:"replicas"`
	decide.Config `mapstructure:",squash"`
}

// AdvisorConfig switches the heavy-tenant advisor's periodic run (and its
// heavy_tenant alerts); its keys sit beside it. `advise` and the API's
// advice read the same keys whether or not it runs.
type AdvisorConfig struct {
	// Enabled runs the advisor in `tenantguard run`. Default true.
	Enabled        bool `mapstructure:"enabled"`
	advisor.Config `mapstructure:",squash"`
}

// LogConfig sets logging.
type LogConfig struct {
	// Level is debug, info, warn or error. Default info.
	Level string `mapstructure:"level"`
}

// DefaultConfig returns every default.
func DefaultConfig() Config {
	c := Config{
		NATS:       NATSConfig{URL: "nats://127.0.0.1:4222", Name: "tenantguard"},
		ClickHouse: store.DefaultConfig(),
		Metrics:    MetricsConfig{Listen: ":9464"},
		API:        api.DefaultConfig(),
		Billing:    billing.DefaultConfig(),
		Collector:  CollectorConfig{Enabled: true, Config: collector.DefaultConfig()},
		Pricing:    pricing.DefaultConfig(),
		Anomaly:    AnomalyConfigSection{Enabled: true, Config: anomaly.DefaultConfig()},
		Advisor:    AdvisorConfig{Enabled: true, Config: advisor.DefaultConfig()},
		Alerts:     notify.DefaultConfig(),
		Decisions:  DecisionsConfig{Enabled: true, Replicas: 1, Config: decide.DefaultConfig()},
		Exporter:   ExporterConfig{Enabled: true, Config: metrics.DefaultConfig()},
		PGStat:     PGStatConfig{Config: pgstat.DefaultConfig()},
		Log:        LogConfig{Level: "info"},
	}
	return c
}

// Validate checks every section and names every bad field.
func (c Config) Validate() error {
	errs := CheckNATSURLs(c.NATS.URL)
	if err := api.CheckListen(c.Metrics.Listen); err != nil {
		errs = append(errs, fmt.Errorf("metrics.listen: %w", err))
	}
	errs = append(errs, c.ClickHouse.Validate(), c.Collector.Validate(), c.API.Validate(), c.Billing.Validate())
	if c.Billing.Currency != c.Pricing.Currency {
		errs = append(errs, fmt.Errorf("billing.currency: %q must equal pricing.currency %q", c.Billing.Currency, c.Pricing.Currency))
	}
	kinds, err := event.NewValidator(event.Rules{CustomKinds: c.Collector.CustomKinds})
	if err == nil {
		errs = append(errs, c.Pricing.Validate(kinds.KnownKind))
	}
	errs = append(errs, c.Exporter.Config.Validate(), c.Anomaly.Validate(), c.Advisor.Config.Validate(), c.Alerts.Validate(), c.Decisions.Config.Validate())
	if c.Decisions.Replicas < 1 || c.Decisions.Replicas > 5 {
		errs = append(errs, errors.New("decisions.replicas: must be 1 to 5"))
	}
	errs = append(errs, c.PGStat.Validate())
	if c.PGStat.Enabled && len(c.PGStat.DSNs) == 0 {
		errs = append(errs, errors.New("pgstat.dsns: must not be empty when pgstat.enabled is true"))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: %q must be debug, info, warn or error", c.Log.Level))
	}
	return errors.Join(errs...)
}

// CheckNATSURLs checks a comma-separated server list the way nats.go reads
// it (a missing scheme means nats://). Errors never quote credentials.
func CheckNATSURLs(list string) []error {
	if strings.TrimSpace(list) == "" {
		return []error{errors.New("nats.url: must not be empty")}
	}
	var errs []error
	for _, part := range strings.Split(list, ",") {
		s := strings.TrimSpace(part)
		bad := func(msg string) { errs = append(errs, fmt.Errorf("nats.url: %q %s", redact.String(s), msg)) }
		if s == "" {
			bad("is empty (a stray comma?)")
			continue
		}
		if !strings.Contains(s, "://") {
			s = "nats://" + s
		}
		u, err := url.Parse(s)
		switch {
		case err != nil:
			bad("is not a valid URL") // url.Parse's error would quote the password
		case u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss":
			bad("must be a nats://, tls://, ws:// or wss:// URL")
		case u.Hostname() == "":
			bad("has no host")
		case u.Port() != "":
			if n, err := strconv.ParseUint(u.Port(), 10, 16); err != nil || n == 0 {
				bad("has a port that is not 1 to 65535")
			}
		}
	}
	return errs
}
