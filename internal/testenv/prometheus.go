package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Prometheus is a prometheus server child process.
type Prometheus struct {
	URL  string // http://127.0.0.1:port
	proc *process
}

// PrometheusConfig says what the server scrapes and evaluates.
type PrometheusConfig struct {
	Targets        []string      // host:port of /metrics endpoints
	ScrapeInterval time.Duration // default 1s
	RuleFiles      []string      // absolute paths of rule files
	Alertmanagers  []string      // host:port of Alertmanagers
}

// StartPrometheus starts prometheus scraping cfg.Targets; it stops at the end of t.
func StartPrometheus(t testing.TB, cfg PrometheusConfig) *Prometheus {
	t.Helper()
	bin := lookBinary("prometheus")
	if bin == "" {
		missing(t, "prometheus")
	}
	if cfg.ScrapeInterval == 0 {
		cfg.ScrapeInterval = time.Second
	}
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "global:\n  scrape_interval: %s\n  evaluation_interval: %s\n", cfg.ScrapeInterval, cfg.ScrapeInterval)
	if len(cfg.RuleFiles) > 0 {
		b.WriteString("rule_files:\n")
		for _, f := range cfg.RuleFiles {
			fmt.Fprintf(&b, "  - %q\n", f)
		}
	}
	if len(cfg.Alertmanagers) > 0 {
		fmt.Fprintf(&b, "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [%s]\n", quoteList(cfg.Alertmanagers))
	}
	fmt.Fprintf(&b, "scrape_configs:\n  - job_name: tenantguard\n    static_configs:\n      - targets: [%s]\n", quoteList(cfg.Targets))
	conf := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	port := FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--web.enable-lifecycle")
	logPath := filepath.Join(dir, "prometheus.log")
	p, err := startProcess("prometheus", logPath, cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop(5 * time.Second) })
	url := "http://" + addr
	if err := waitHTTP(url+"/-/ready", 30*time.Second); err != nil {
		t.Fatalf("prometheus: %v\n%s", err, tail(logPath))
	}
	return &Prometheus{URL: url, proc: p}
}

// Alertmanager is a prometheus-alertmanager child process.
type Alertmanager struct {
	URL  string // http://127.0.0.1:port
	proc *process
}

// StartAlertmanager starts an Alertmanager with a config that routes every
// alert to a receiver that sends nothing; it stops at the end of t.
func StartAlertmanager(t testing.TB) *Alertmanager {
	t.Helper()
	bin := lookBinary("prometheus-alertmanager", "alertmanager")
	if bin == "" {
		missing(t, "prometheus-alertmanager")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "alertmanager.yml")
	const cfg = "route:\n  receiver: none\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: none\n"
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	cmd := exec.Command(bin, "--config.file="+conf, "--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--cluster.listen-address=")
	logPath := filepath.Join(dir, "alertmanager.log")
	p, err := startProcess("alertmanager", logPath, cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop(5 * time.Second) })
	url := "http://" + addr
	if err := waitHTTP(url+"/-/ready", 30*time.Second); err != nil {
		t.Fatalf("alertmanager: %v\n%s", err, tail(logPath))
	}
	return &Alertmanager{URL: url, proc: p}
}

// Promtool returns the promtool path, skipping (or failing in CI) if absent.
func Promtool(t testing.TB) string {
	t.Helper()
	bin := lookBinary("promtool")
	if bin == "" {
		missing(t, "promtool")
	}
	return bin
}

// Amtool returns the amtool path, skipping (or failing in CI) if absent.
func Amtool(t testing.TB) string {
	t.Helper()
	bin := lookBinary("amtool", "prometheus-alertmanager-amtool")
	if bin == "" {
		missing(t, "amtool")
	}
	return bin
}

// Command runs name with args and returns combined output.
func Command(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

func quoteList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}
