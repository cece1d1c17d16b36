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
	if !asExit(err, &ee) || ee.code != 2 {
		t.Fatalf("got %v, want exit status 2", err)
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
	setDefaults(v, "", reflect.ValueOf(DefaultConfig()))
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
	got, want := normalize(t, a.cfg), normalize(t, DefaultConfig())
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
func normalize(t *testing.T, c Config) map[string]any {
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
