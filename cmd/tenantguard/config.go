package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/tenantguard/tenantguard/anomaly"
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
)

// Config is the whole configuration; each section belongs to one stage.
type Config struct {
	NATS       NATSConfig       `mapstructure:"nats"`
	ClickHouse store.Config     `mapstructure:"clickhouse"`
	Metrics    MetricsConfig    `mapstructure:"metrics"`
	API        api.Config       `mapstructure:"api"`
	Billing    billing.Config   `mapstructure:"billing"`
	Collector  collector.Config `mapstructure:"collector"`
	Pricing    pricing.Config   `mapstructure:"pricing"`
	Anomaly    anomaly.Config   `mapstructure:"anomaly"`
	Alerts     notify.Config    `mapstructure:"alerts"`
	Decisions  DecisionsConfig  `mapstructure:"decisions"`
	Exporter   ExporterConfig   `mapstructure:"exporter"`
	PGStat     pgstat.Config    `mapstructure:"pgstat"`
	Log        LogConfig        `mapstructure:"log"`
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
	Enabled       bool `mapstructure:"enabled"`
	decide.Config `mapstructure:",squash"`
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
		Collector:  collector.DefaultConfig(),
		Pricing:    pricing.DefaultConfig(),
		Anomaly:    anomaly.DefaultConfig(),
		Alerts:     notify.DefaultConfig(),
		Decisions:  DecisionsConfig{Enabled: true, Config: decide.DefaultConfig()},
		Exporter:   ExporterConfig{Enabled: true, Config: metrics.DefaultConfig()},
		PGStat:     pgstat.DefaultConfig(),
		Log:        LogConfig{Level: "info"},
	}
	return c
}

// Validate checks every section and names every bad field.
func (c Config) Validate() error {
	errs := checkNATSURLs(c.NATS.URL)
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
	errs = append(errs, c.Exporter.Config.Validate(), c.Anomaly.Validate(), c.Alerts.Validate(), c.Decisions.Config.Validate())
	errs = append(errs, c.PGStat.Validate())
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: %q must be debug, info, warn or error", c.Log.Level))
	}
	return errors.Join(errs...)
}

// strictConfig marks a command that treats config warnings (unknown
// TENANTGUARD_* variables) as problems: `config validate`.
const strictConfig = "strict-config"

// load reads the config file, then TENANTGUARD_* variables, then flags. An
// invalid config is a *configError naming every problem.
func (a *app) load(cmd *cobra.Command) error {
	v := a.v
	keys := setDefaults(v, "", reflect.ValueOf(DefaultConfig()))
	v.SetEnvPrefix("TENANTGUARD")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	switch {
	case a.cfgFile != "":
		v.SetConfigFile(a.cfgFile)
	case os.Getenv(envConfigFile) != "":
		v.SetConfigFile(os.Getenv(envConfigFile))
	default:
		for _, p := range []string{"tenantguard.yaml", "/etc/tenantguard/tenantguard.yaml"} {
			if _, err := os.Stat(p); err == nil {
				v.SetConfigFile(p)
				break
			}
		}
	}
	source := orDefault(v.ConfigFileUsed(), "defaults and environment")
	if v.ConfigFileUsed() != "" {
		raw, err := os.ReadFile(v.ConfigFileUsed())
		if err != nil {
			return fmt.Errorf("read config: %w", err)
		}
		v.SetConfigType("yaml")
		if err := v.ReadConfig(bytes.NewReader(raw)); err != nil {
			return &configError{source: source, problems: []string{redact(err.Error())}}
		}
	}
	for flag, key := range map[string]string{"nats-url": "nats.url", "clickhouse-addr": "clickhouse.addr", "log-level": "log.level"} {
		if f := cmd.Flags().Lookup(flag); f != nil && f.Changed {
			v.Set(key, f.Value.String())
		}
	}
	cfg, problems := decodeConfig(v, keys)
	unknown := unknownEnv(os.Environ(), keys)
	if cmd.Annotations[strictConfig] != "" {
		for _, u := range unknown {
			problems = append(problems, u.String())
		}
	}
	if len(problems) > 0 {
		return &configError{source: source, problems: problems}
	}
	a.cfg = cfg
	a.log = a.logger(cfg.Log.Level)
	for _, u := range unknown {
		a.log.Warn("unknown environment variable, ignored", "component", "config", "var", u.name, "closest", u.closest)
	}
	return nil
}

// userSet reports whether the config file or the environment set key (a
// default does not count, unlike viper's IsSet).
func (a *app) userSet(key string) bool {
	env := "TENANTGUARD_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
	_, inEnv := os.LookupEnv(env)
	return inEnv || a.v.InConfig(key)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// setDefaults registers every leaf of def under its mapstructure key, so
// viper knows every key and TENANTGUARD_* variables reach all of them. It
// returns the keys.
func setDefaults(v *viper.Viper, prefix string, def reflect.Value) []string {
	var keys []string
	t := def.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		parts := strings.Split(f.Tag.Get("mapstructure"), ",")
		if len(parts) > 1 && parts[1] == "squash" {
			keys = append(keys, setDefaults(v, prefix, def.Field(i))...)
			continue
		}
		tag := parts[0]
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		key := tag
		if prefix != "" {
			key = prefix + "." + tag
		}
		fv := def.Field(i)
		if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeOf(time.Time{}) {
			keys = append(keys, setDefaults(v, key, fv)...)
			continue
		}
		v.SetDefault(key, fv.Interface())
		keys = append(keys, key)
	}
	return keys
}

// connectNATS dials the configured servers and reconnects forever; by
// default it returns at once and keeps trying in the background while no
// server answers. extra options override these.
func (a *app) connectNATS(name string, extra ...nats.Option) (*nats.Conn, error) {
	c := a.cfg.NATS
	opts := []nats.Option{
		nats.Name(c.Name + "-" + name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(64 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				a.log.Warn("nats disconnected", "component", name, "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			a.log.Info("nats reconnected", "component", name, "url", nc.ConnectedUrlRedacted())
		}),
	}
	if c.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.TLS.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.TLS.CAFile))
	}
	if c.TLS.CertFile != "" {
		opts = append(opts, nats.ClientCert(c.TLS.CertFile, c.TLS.KeyFile))
	}
	nc, err := nats.Connect(c.URL, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", redact(c.URL), err)
	}
	return nc, nil
}

func newConfigCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Check the configuration"}
	cmd.AddCommand(&cobra.Command{
		Use:         "validate",
		Short:       "Load the config (file, environment, flags) and report every bad field; exit 1 if any",
		Annotations: map[string]string{strictConfig: "true"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(a.stdout, "config OK (%s)\n", orDefault(a.v.ConfigFileUsed(), "defaults and environment"))
			return nil
		},
	})
	return cmd
}
