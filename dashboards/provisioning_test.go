package dashboards

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

// provisionedDatasources returns uid -> type from the datasource YAML.
func provisionedDatasources(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("provisioning/datasources/tenantguard.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name     string         `yaml:"name"`
			UID      string         `yaml:"uid"`
			Type     string         `yaml:"type"`
			URL      string         `yaml:"url"`
			JSONData map[string]any `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("datasources yaml: %v", err)
	}
	if f.APIVersion != 1 {
		t.Fatalf("datasources apiVersion = %d, want 1", f.APIVersion)
	}
	out := map[string]string{}
	for _, d := range f.Datasources {
		if d.UID == "" || d.Name == "" || d.Type == "" {
			t.Errorf("datasource %+v lacks uid, name or type", d)
		}
		if d.Type == "grafana-clickhouse-datasource" && (d.JSONData["host"] == nil || d.JSONData["protocol"] != "native") {
			t.Errorf("clickhouse datasource needs jsonData.host and protocol native (HTTP fails on 18.16): %v", d.JSONData)
		}
		if d.Type == "prometheus" && d.URL == "" {
			t.Errorf("prometheus datasource has no url")
		}
		out[d.UID] = d.Type
	}
	return out
}

func TestDashboardProvider(t *testing.T) {
	b, err := os.ReadFile("provisioning/dashboards/tenantguard.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name    string `yaml:"name"`
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("provider yaml: %v", err)
	}
	if f.APIVersion != 1 || len(f.Providers) != 1 {
		t.Fatalf("want apiVersion 1 and one provider, got %+v", f)
	}
	p := f.Providers[0]
	if p.Type != "file" || !filepath.IsAbs(p.Options.Path) {
		t.Errorf("provider %+v: want type file and an absolute options.path", p)
	}
}

// TestPromtoolConfigAndRules runs promtool check config (which also checks
// the rule files it references) and promtool check rules.
func TestPromtoolConfigAndRules(t *testing.T) {
	promtool := testenv.Promtool(t)
	rules, err := filepath.Glob("../configs/rules/*.yml")
	if err != nil || len(rules) < 2 {
		t.Fatalf("rule files: %v %v", rules, err)
	}
	out, err := exec.Command(promtool, append([]string{"check", "rules"}, rules...)...).CombinedOutput()
	if err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
	if strings.Count(string(out), "SUCCESS") != len(rules) {
		t.Errorf("promtool check rules: want %d SUCCESS lines:\n%s", len(rules), out)
	}
	out, err = exec.Command(promtool, "check", "config", "../configs/prometheus.yml").CombinedOutput()
	if err != nil {
		t.Errorf("promtool check config: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "SUCCESS: 2 rule files found") {
		t.Errorf("prometheus.yml should load both rule files:\n%s", out)
	}
	tests, _ := filepath.Glob("../configs/rules/tests/*.yml")
	if len(tests) > 0 {
		out, err = exec.Command(promtool, append([]string{"test", "rules"}, tests...)...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool test rules: %v\n%s", err, out)
		}
	}
}

// TestAlertmanagerExampleConfig checks configs/alertmanager.yml with amtool
// and that it routes the alertnames tenantguard sends.
func TestAlertmanagerExampleConfig(t *testing.T) {
	path := filepath.Join("..", "configs", "alertmanager.yml")
	out, err := testenv.Command(testenv.Amtool(t), "check-config", path)
	if err != nil {
		t.Fatalf("amtool check-config: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"TenantguardSpendCap", "TenantguardUsageSpike", "pg_unscoped"} {
		if !strings.Contains(string(raw), name) {
			t.Errorf("configs/alertmanager.yml does not route %s", name)
		}
	}
}
