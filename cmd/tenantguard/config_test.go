package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/tenantguard/tenantguard/internal/daemon"
)

// runCLI runs tenantguard with args and returns stdout, stderr and the error.
func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	a := newApp(&out, &errb)
	root := a.root()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errb)
	err := root.Execute()
	return out.String(), errb.String(), err
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigPrecedenceFileEnvFlag(t *testing.T) {
	file := writeFile(t, "tg.yaml", "nats:\n  url: nats://file:4222\nclickhouse:\n  addr: [\"file:9000\"]\n  database: fromfile\ncollector:\n  batch_max_rows: 123\n")
	t.Setenv("TENANTGUARD_CLICKHOUSE_DATABASE", "fromenv")
	t.Setenv("TENANTGUARD_NATS_URL", "nats://env:4222")
	var a *app
	check := func(args ...string) *app {
		var out, errb bytes.Buffer
		a = newApp(&out, &errb)
		root := a.root()
		root.SetArgs(args)
		if err := root.Execute(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errb.String())
		}
		return a
	}
	a = check("--config", file, "--nats-url", "nats://flag:4222", "config", "validate")
	if got := a.cfg.NATS.URL; got != "nats://flag:4222" {
		t.Errorf("nats.url got %q, want the flag's", got)
	}
	if got := a.cfg.ClickHouse.Database; got != "fromenv" {
		t.Errorf("clickhouse.database got %q, want the environment's", got)
	}
	if got := a.cfg.ClickHouse.Addr; len(got) != 1 || got[0] != "file:9000" {
		t.Errorf("clickhouse.addr got %v, want the file's", got)
	}
	if got := a.cfg.Collector.BatchMaxRows; got != 123 {
		t.Errorf("collector.batch_max_rows got %d, want the file's 123", got)
	}
	if got := a.cfg.Collector.BatchMaxWait; got.String() != "500ms" {
		t.Errorf("collector.batch_max_wait got %s, want the default 500ms", got)
	}
	t.Setenv("TENANTGUARD_CLICKHOUSE_ADDR", "a:9000,b:9000")
	a = check("--config", file, "config", "validate")
	if got := a.cfg.ClickHouse.Addr; len(got) != 2 || got[1] != "b:9000" {
		t.Errorf("comma-separated TENANTGUARD_CLICKHOUSE_ADDR got %v, want [a:9000 b:9000]", got)
	}
}

func TestBadConfigNamesEveryField(t *testing.T) {
	file := writeFile(t, "bad.yaml", "collector:\n  batch_max_rows: 0\n  ack_wait: 10ms\nclickhouse:\n  database: \"x;drop\"\npricing:\n  prices:\n    api_request: abc\n")
	_, _, err := runCLI(t, "--config", file, "config", "validate")
	if err == nil {
		t.Fatal("a bad config was accepted")
	}
	var ee *exitError
	if !asExit(err, &ee) || ee.code != 1 {
		t.Fatalf("got %v, want exit status 1 (a failed check)", err)
	}
	for _, field := range []string{"collector.batch_max_rows", "collector.ack_wait", "clickhouse.database", "pricing.prices.api_request"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s:\n%v", field, err)
		}
	}
}

func TestUnknownKeyIsAnError(t *testing.T) {
	file := writeFile(t, "typo.yaml", "nats:\n  ulr: nats://x:4222\n")
	_, _, err := runCLI(t, "--config", file, "config", "validate")
	if err == nil || !strings.Contains(err.Error(), "ulr") {
		t.Fatalf("got %v, want an error naming the unknown key ulr", err)
	}
}

func TestExampleConfigLoadsWithDefaults(t *testing.T) {
	_, _, err := runCLI(t, "--config", "../../configs/tenantguard.example.yaml", "config", "validate")
	if err != nil {
		t.Fatalf("the example config does not load: %v", err)
	}
}

// TestExampleConfigShowsEveryKeyWithItsDefault keeps the example file honest:
// every key the daemon knows appears in it, and loading it gives the defaults.
func TestExampleConfigShowsEveryKeyWithItsDefault(t *testing.T) {
	raw, err := os.ReadFile("../../configs/tenantguard.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	v := viper.New()
	setDefaults(v, daemon.DefaultConfig())
	for _, key := range v.AllKeys() {
		var node any = doc
		for _, part := range strings.Split(key, ".") {
			m, ok := node.(map[string]any)
			if !ok {
				node = nil
				break
			}
			node = m[part]
			if _, present := m[part]; !present {
				t.Errorf("configs/tenantguard.example.yaml lacks %s", key)
				break
			}
		}
	}
	_, _, err = runCLI(t, "--config", "../../configs/tenantguard.example.yaml", "config", "validate")
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	a := newApp(&out, &errb)
	root := a.root()
	root.SetArgs([]string{"--config", "../../configs/tenantguard.example.yaml", "config", "validate"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	got, want := normalize(t, a.cfg), normalize(t, daemon.DefaultConfig())
	if !reflect.DeepEqual(got, want) {
		for k := range want {
			if !reflect.DeepEqual(got[k], want[k]) {
				t.Errorf("section %s: example gives %v, default is %v", k, got[k], want[k])
			}
		}
	}
}

// normalize turns a config into JSON-shaped maps where empty lists and maps
// equal absent ones.
func normalize(t *testing.T, c daemon.Config) map[string]any {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return dropEmpty(m).(map[string]any)
}

func dropEmpty(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, val := range x {
			if d := dropEmpty(val); d != nil {
				out[k] = d
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	case []any:
		if len(x) == 0 {
			return nil
		}
	}
	return v
}

// validateFile runs `config validate` on a YAML body and returns the error.
func validateFile(t *testing.T, body string) error {
	t.Helper()
	file := writeFile(t, "tg.yaml", body)
	_, _, err := runCLI(t, "--config", file, "config", "validate")
	return err
}

// wantInvalid checks that err is a failed check (exit 1) naming every field.
func wantInvalid(t *testing.T, err error, fields ...string) {
	t.Helper()
	var ee *exitError
	if err == nil || !asExit(err, &ee) || ee.code != 1 {
		t.Errorf("got %v, want an invalid config (exit 1)", err)
		return
	}
	for _, f := range fields {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error does not name %s:\n%v", f, err)
		}
	}
}

func TestConfigDurationsNeedUnits(t *testing.T) {
	t.Chdir(t.TempDir())
	wantInvalid(t, validateFile(t, "api:\n  query_timeout: 5\n"), "api.query_timeout")
	wantInvalid(t, validateFile(t, "collector:\n  stream:\n    max_age: 1.5\n"), "collector.stream.max_age")
	t.Run("env", func(t *testing.T) {
		t.Setenv("TENANTGUARD_API_QUERY_TIMEOUT", "5")
		_, _, err := runCLI(t, "config", "validate")
		wantInvalid(t, err, "api.query_timeout")
	})
	for _, body := range []string{
		"api:\n  query_timeout: 5s\n",
		"collector:\n  stream:\n    max_age: 0\n", // zero needs no unit
		"alerts:\n  alertmanager:\n    stale_timeout: 0s\n",
	} {
		if err := validateFile(t, body); err != nil {
			t.Errorf("%q: %v", body, err)
		}
	}
}

// TestConfigReportsEveryErrorTogether: type errors, unknown keys and range
// errors of one file come out together, each named by its full path.
func TestConfigReportsEveryErrorTogether(t *testing.T) {
	t.Chdir(t.TempDir())
	err := validateFile(t, `metricz:
  listen: ":1"
nats:
  ulr: nats://x:4222
api:
  max_page_size: lots
collector:
  batch_max_rows: -5
pricing:
  plans:
    default:
      spend_capp: "1"
`)
	wantInvalid(t, err, "metricz", "nats.ulr", "api.max_page_size", "collector.batch_max_rows", "pricing.plans.default.spend_capp")
	if err != nil && strings.Contains(err.Error(), "''") {
		t.Errorf("an unknown key is named by an empty path:\n%v", err)
	}
}

func TestConfigRejectsBadListenersAndRanges(t *testing.T) {
	t.Chdir(t.TempDir())
	for _, tc := range []struct{ body, field string }{
		{"api:\n  listen: 127.0.0.1:99999\n", "api.listen"},
		{"api:\n  listen: \"8080\"\n", "api.listen"},
		{"api:\n  listen: \"127.0.0.1:-1\"\n", "api.listen"},
		{"metrics:\n  listen: garbage:port\n", "metrics.listen"},
		{"metrics:\n  listen: \"bad host!:80\"\n", "metrics.listen"},
		{"collector:\n  lateness: 876000h\n", "collector.lateness"},
		{"collector:\n  ack_wait: 876000h\n", "collector.ack_wait"},
		{"anomaly:\n  warm_start:\n    history: 876000h\n", "anomaly.warm_start.history"},
		{"api:\n  max_range: 876000h\n", "api.max_range"},
		{"api:\n  query_timeout: 5ns\n", "api.query_timeout"},
		{"clickhouse:\n  retention_days: 1000000\n", "clickhouse.retention_days"},
		{"clickhouse:\n  addr: [\"127.0.0.1:99999\"]\n", "clickhouse.addr"},
		{"nats:\n  url: \"nats://127.0.0.1:99999\"\n", "nats.url"},
	} {
		err := validateFile(t, tc.body)
		if err == nil {
			t.Errorf("%q was accepted", tc.body)
			continue
		}
		wantInvalid(t, err, tc.field)
	}
	for _, body := range []string{
		"api:\n  listen: \":0\"\nmetrics:\n  listen: \"127.0.0.1:9464\"\n",
		"api:\n  listen: \"[::1]:8080\"\nmetrics:\n  listen: \"localhost:9464\"\n",
		"nats:\n  url: \"nats://a:1,nats://user:pw@b:4222, tls://c\"\n",
		"collector:\n  lateness: 720h\n",
	} {
		if err := validateFile(t, body); err != nil {
			t.Errorf("%q: %v", body, err)
		}
	}
}

func TestUnknownEnvironmentVariable(t *testing.T) {
	example, err := filepath.Abs("../../configs/tenantguard.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(t.TempDir())
	t.Setenv("TENANTGUARD_NATS_ULR", "nats://x:4222")
	_, _, err = runCLI(t, "config", "validate")
	wantInvalid(t, err, "TENANTGUARD_NATS_ULR", "TENANTGUARD_NATS_URL")

	// Any other command only warns, naming the closest key.
	_, stderr, err := runCLI(t, "decisions", "--format", "xml")
	var ee *exitError
	if !asExit(err, &ee) || ee.code != 2 || !strings.Contains(err.Error(), "--format") {
		t.Fatalf("got %v, want the usage error of --format", err)
	}
	if !strings.Contains(stderr, "TENANTGUARD_NATS_ULR") || !strings.Contains(stderr, "TENANTGUARD_NATS_URL") {
		t.Errorf("no warning naming TENANTGUARD_NATS_ULR and the closest key on stderr:\n%s", stderr)
	}

	// The variables the CLI reads itself are not config keys, and not unknown.
	os.Unsetenv("TENANTGUARD_NATS_ULR")
	t.Setenv("TENANTGUARD_CONFIG", example)
	t.Setenv("TENANTGUARD_NATS_URL", "nats://127.0.0.1:4222")
	t.Setenv("TENANTGUARD_ANOMALY_WARM_START_HISTORY", "24h")
	t.Setenv("TENANTGUARD_SIM_FULL", "1")
	t.Setenv("TENANTGUARD_TEST_SOMETHING", "1")
	if _, _, err := runCLI(t, "config", "validate"); err != nil {
		t.Fatalf("known variables were refused: %v", err)
	}
}

// TestDeployExample checks configs/deploy: the replicas' config validates,
// and every file the compose file mounts exists.
func TestDeployExample(t *testing.T) {
	if _, _, err := runCLI(t, "--config", "../../configs/deploy/tenantguard.yaml", "config", "validate"); err != nil {
		t.Fatalf("configs/deploy/tenantguard.yaml: %v", err)
	}
	raw, err := os.ReadFile("../../configs/deploy/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	mounts := 0
	for name, svc := range compose.Services {
		for _, v := range svc.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, ".") || src == "./decisions.key" {
				continue // a named volume, or the key the operator makes
			}
			mounts++
			if _, err := os.Stat(filepath.Join("../../configs/deploy", src)); err != nil {
				t.Errorf("service %s mounts %s: %v", name, src, err)
			}
		}
	}
	if mounts < 8 {
		t.Errorf("got %d file mounts in compose.yaml, want the configs, rules and dashboards mounted", mounts)
	}
}
