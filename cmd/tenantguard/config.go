package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tenantguard/tenantguard/internal/configkeys"
	"github.com/tenantguard/tenantguard/internal/devstack"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/viper"

	"github.com/tenantguard/tenantguard/internal/daemon"
	"github.com/tenantguard/tenantguard/internal/redact"
)

// strictConfig marks a command that treats config warnings (unknown
// TENANTGUARD_* variables) as problems: `config validate`.
const strictConfig = "strict-config"

// load reads the config file, then TENANTGUARD_* variables, then flags. An
// invalid config is a *configError naming every problem.
func (a *app) load(cmd *cobra.Command) error {
	v := a.v
	keys := setDefaults(v, daemon.DefaultConfig())
	v.SetEnvPrefix("TENANTGUARD")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	switch {
	case a.cfgFile != "":
		v.SetConfigFile(a.cfgFile)
	case os.Getenv(envConfigFile) != "":
		v.SetConfigFile(os.Getenv(envConfigFile))
	default:
		for _, p := range configSearchPath(cmd) {
			if _, err := os.Stat(p); err == nil {
				v.SetConfigFile(p)
				break
			}
		}
	}
	source := a.configSource()
	if v.ConfigFileUsed() != "" {
		raw, err := os.ReadFile(v.ConfigFileUsed())
		if err != nil {
			return fmt.Errorf("read config: %w", err)
		}
		v.SetConfigType("yaml")
		if err := v.ReadConfig(bytes.NewReader(raw)); err != nil {
			return &configError{source: source, problems: []string{redact.String(err.Error())}}
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
		a.log.Warn("unknown environment variable, ignored", "component", "config", "var", u.Name, "closest", u.Closest)
	}
	return nil
}

// configSearchPath is where the config file is looked for when neither
// --config nor $TENANTGUARD_CONFIG names one, first match wins:
// ./tenantguard.yaml, then the dev stack's file (only one `tenantguard dev`
// wrote, and never for `run` or `dev`, so a daemon started in a folder
// where dev once ran never picks up dev's addresses), then
// /etc/tenantguard/tenantguard.yaml.
func configSearchPath(cmd *cobra.Command) []string {
	paths := []string{"tenantguard.yaml"}
	if name := cmd.Name(); name != "run" && name != "dev" && writtenByDev(devstack.ConfigFile) {
		paths = append(paths, devstack.ConfigFile)
	}
	return append(paths, "/etc/tenantguard/tenantguard.yaml")
}

// writtenByDev reports whether path exists and starts with devstack.ConfigMarker.
func writtenByDev(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, len(devstack.ConfigMarker))
	n, _ := io.ReadFull(f, head)
	return string(head[:n]) == devstack.ConfigMarker
}

// configSource names the config file in use, for messages.
func (a *app) configSource() string {
	return orDefault(a.v.ConfigFileUsed(), "defaults and environment")
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

// setDefaults registers every leaf of def with viper (see
// configkeys.Leaves), so viper knows every key and TENANTGUARD_* variables
// reach all of them. It returns the keys.
func setDefaults(v *viper.Viper, def any) []string {
	return configkeys.Leaves(def, v.SetDefault)
}

// connectNATS dials the configured servers (see daemon.ConnectNATS).
func (a *app) connectNATS(name string, extra ...nats.Option) (*nats.Conn, error) {
	return daemon.ConnectNATS(a.cfg.NATS, a.log, name, extra...)
}

func newConfigCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Check the configuration"}
	cmd.AddCommand(&cobra.Command{
		Use:         "validate",
		Short:       "Load the config (file, environment, flags) and report every bad field; exit 1 if any",
		Annotations: map[string]string{strictConfig: "true"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(a.stdout, "config OK (%s)\n", a.configSource())
			return nil
		},
	})
	return cmd
}
