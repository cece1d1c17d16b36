package main

import (
	"fmt"
	"strings"

	"github.com/tenantguard/tenantguard/internal/configkeys"
	"github.com/tenantguard/tenantguard/internal/daemon"
	"github.com/tenantguard/tenantguard/internal/redact"

	"github.com/spf13/viper"
)

const envPrefix = "TENANTGUARD_"

// envConfigFile names the config file when --config is not given.
const envConfigFile = envPrefix + "CONFIG"

// envNotKeys are TENANTGUARD_* variables that are not config keys but are
// read on purpose, so they are never reported as unknown; so are the test
// suite's switches, TENANTGUARD_TEST_*.
var envNotKeys = map[string]bool{
	envConfigFile:          true,
	envPrefix + "SIM_FULL": true, // the full anomaly simulation in anomaly/sim's tests
}

// envTestPrefix starts the variables the test suite sets for its children.
const envTestPrefix = envPrefix + "TEST_"

// configError is a config that was read but is invalid. `config validate`
// reports it as a failed check (exit 1); other commands refuse to start
// (exit 2).
type configError struct {
	source   string
	problems []string // one line each, "<key path>: <what is wrong>"
}

func (e *configError) Error() string {
	return fmt.Sprintf("invalid config (%s):\n%s", e.source, strings.Join(e.problems, "\n"))
}

// envName is the environment variable of a config key.
func envName(key string) string { return configkeys.EnvName(envPrefix, key) }

// decodeConfig turns v's merged settings into a Config and reports every
// problem at once (see configkeys.Decode), with credentials redacted.
func decodeConfig(v *viper.Viper, keys []string) (daemon.Config, []string) {
	cfg := daemon.DefaultConfig()
	problems := configkeys.Decode(v.AllSettings(), &cfg, keys, func() error { return cfg.Validate() })
	for i, p := range problems {
		problems[i] = redact.String(p)
	}
	return cfg, problems
}

// unknownEnv returns the TENANTGUARD_* variables of environ that set no
// config key.
func unknownEnv(environ, keys []string) []configkeys.EnvTypo {
	return configkeys.UnknownEnv(environ, envPrefix, keys, func(name string) bool {
		return envNotKeys[name] || strings.HasPrefix(name, envTestPrefix)
	})
}
