package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/spf13/viper"

	"github.com/tenantguard/tenantguard/internal/daemon"
)

// FuzzConfigLoad feeds YAML documents through the config loader: reading,
// decoding and validating must never panic, and every problem is one line
// that names what it is about.
func FuzzConfigLoad(f *testing.F) {
	example, err := os.ReadFile("../../configs/tenantguard.example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(example),
		"api:\n  query_timeout: 5\n  listen: 127.0.0.1:99999\ncollector:\n  batch_max_rows: -5\n",
		"metricz: 1\nnats: {ulr: x}\npricing: {plans: {pro: {spend_capp: 1, prices: {api_request: abc}}}}\n",
		"api:\n  tokens:\n    - {name: a, sha256: zz, role: root, extra: 1}\n    - 7\n",
		"collector: [1, 2]\nanomaly:\n  warm_start: 3\n  spend_thresholds: {a: b}\n",
		"clickhouse:\n  addr: 127.0.0.1:9000,:0\n  dial_timeout: 1e400\n  retention_days: 1e30\n",
		"? [a, b]\n: c\n1: 2\n",
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		v := viper.New()
		keys := setDefaults(v, daemon.DefaultConfig())
		v.SetConfigType("yaml")
		if err := v.ReadConfig(bytes.NewReader(doc)); err != nil {
			return // not YAML: load reports the parser's error
		}
		cfg, problems := decodeConfig(v, keys)
		if len(problems) == 0 {
			if err := cfg.Validate(); err != nil {
				t.Fatalf("decodeConfig accepted a config that Validate refuses: %v", err)
			}
		}
		for _, p := range problems {
			if field, _, ok := strings.Cut(p, ": "); !ok || field == "" || strings.Contains(p, "\n") {
				t.Fatalf("problem %q is not one line naming its key", p)
			}
		}
	})
}
