package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/internal/devstack"

	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

// TestVersion: --version names the version, the commit, the Go version and
// the version of the ClickHouse server the config points at, or says
// within a few seconds that it is not reachable; a config that does not
// load still gets the version.
func TestVersion(t *testing.T) {
	bin := testenv.Binary(t)
	ch, _ := testenv.ClickHouse(t)
	dead := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	for _, c := range []struct {
		name string
		args []string
		want *regexp.Regexp
	}{
		{"reachable", []string{"--clickhouse-addr", ch.Addr}, regexp.MustCompile(`(?m)^clickhouse  18\.16\.\d+ at ` + regexp.QuoteMeta(ch.Addr) + ` \(config: defaults and environment\)$`)},
		{"unreachable", []string{"--clickhouse-addr", dead}, regexp.MustCompile(`(?m)^clickhouse  not reachable at ` + regexp.QuoteMeta(dead) + ` within 2s`)},
		{"bad config", []string{"--config", writeFile(t, "bad.yaml", "metricz: 1\n")}, regexp.MustCompile(`(?m)^clickhouse  not asked: the config does not load`)},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, bin, append([]string{"--version"}, c.args...)...)
		cmd.Dir = t.TempDir()
		begin := time.Now()
		out, err := cmd.CombinedOutput()
		took := time.Since(begin)
		cancel()
		if err != nil {
			t.Errorf("%s: %v\n%s", c.name, err, out)
			continue
		}
		for _, re := range []*regexp.Regexp{
			regexp.MustCompile(`(?m)^tenantguard \S+$`),
			regexp.MustCompile(`(?m)^commit      ([0-9a-f]{40}( \(.*\))?|unknown)$`),
			regexp.MustCompile(`(?m)^go          go1\.\d+\S* \w+/\w+$`),
			c.want,
		} {
			if !re.Match(out) {
				t.Errorf("%s: output does not match %s:\n%s", c.name, re, out)
			}
		}
		if took > 5*time.Second {
			t.Errorf("%s: took %s, want at most 5s", c.name, took.Round(time.Millisecond))
		}
	}
}

// TestConfigSearchPath: commands find the dev stack's file when no other
// config is named, but only a file dev wrote, never for run or dev, and
// after ./tenantguard.yaml.
func TestConfigSearchPath(t *testing.T) {
	const devFile = devstack.ConfigMarker + " (test)\nnats:\n  url: nats://127.0.0.1:4999\n"
	for _, c := range []struct {
		name    string
		files   map[string]string
		command []string
		want    string
	}{
		{"dev file", map[string]string{devstack.ConfigFile: devFile}, []string{"config", "validate"}, ".tenantguard/tenantguard.yaml"},
		{"not without the marker", map[string]string{devstack.ConfigFile: "nats:\n  url: nats://127.0.0.1:4999\n"}, []string{"config", "validate"}, "defaults and environment"},
		{"./tenantguard.yaml first", map[string]string{devstack.ConfigFile: devFile, "tenantguard.yaml": "log:\n  level: warn\n"}, []string{"config", "validate"}, "tenantguard.yaml"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Chdir(t.TempDir())
			for name, body := range c.files {
				writeRel(t, name, body)
			}
			var a *app
			var out strings.Builder
			a = newApp(&out, &out)
			root := a.root()
			root.SetArgs(c.command)
			root.SetOut(&out)
			if err := root.Execute(); err != nil {
				t.Fatalf("%v: %v", c.command, err)
			}
			if got := a.configSource(); got != c.want {
				t.Errorf("%v: got config %q, want %q", c.command, got, c.want)
			}
		})
	}
	// The daemon commands never look at dev's file, even when it is there.
	t.Chdir(t.TempDir())
	writeRel(t, devstack.ConfigFile, devFile)
	for name, want := range map[string]bool{"run": false, "dev": false, "throttle": true, "migrate": true, "export": true} {
		got := slices.Contains(configSearchPath(&cobra.Command{Use: name}), devstack.ConfigFile)
		if got != want {
			t.Errorf("%s: dev's file searched %v, want %v", name, got, want)
		}
	}
}

func writeRel(t *testing.T, name, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}
