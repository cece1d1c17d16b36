package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReplayJSONKeepsFields replays CSV rollups of a busy tenant that
// triples for an hour and a small one (2 events/min) that triples for
// three hours, after eight days of seasonal traffic, and checks every
// alert line: the contract fields tenant_id, metric, starts_at and ends_at
// are there, and so is the scale the episode fired on (1m for the busy
// tenant, a long window for the small one).
func TestReplayJSONKeepsFields(t *testing.T) {
	start := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	const days = 8
	spikeFrom, spikeTo := days*1440-600, days*1440-420
	var sb strings.Builder
	sb.WriteString("minute,tenant_id,kind,count,quantity,errors,latency_p95_ms\n")
	// A deterministic, mildly noisy rate: the sine of the day plus a
	// pseudo-random wobble.
	noise := func(m, k int) float64 { return 0.15 * math.Sin(float64(m*7919+k*104729)) }
	for m := 0; m < days*1440; m++ {
		at := start.Add(time.Duration(m) * time.Minute).Format(time.RFC3339)
		day := 1 + 0.4*math.Sin(2*math.Pi*float64(m%1440)/1440)
		for k, tn := range []struct {
			id   string
			rate float64
		}{{"busy", 300}, {"small", 2}} {
			mu := tn.rate * day * (1 + noise(m, k))
			if m >= spikeFrom && m < spikeTo && (tn.id == "small" || m < spikeFrom+60) {
				mu *= 3
			}
			// Small counts: carry the fraction over minutes so the sum is right.
			n := int(mu)
			if frac := mu - float64(n); frac > 0.5*(1+math.Sin(float64(m*31+k))) {
				n++
			}
			fmt.Fprintf(&sb, "%s,%s,api_request,%d,%d,0,\n", at, tn.id, n, n)
		}
	}
	in := writeFile(t, "rollups.csv", sb.String())
	out, stderr, err := runCLI(t, "replay", "--input", in, "--format", "json", "--flush", "3h")
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, stderr)
	}
	scales := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	lines := 0
	for sc.Scan() {
		lines++
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("line %d: %v: %s", lines, err, sc.Text())
		}
		for _, k := range []string{"tenant_id", "metric", "starts_at", "ends_at", "scale"} {
			if _, ok := line[k]; !ok {
				t.Errorf("line %d lacks %s: %s", lines, k, sc.Text())
			}
		}
		if line["metric"] == "usage" {
			scales[fmt.Sprint(line["tenant_id"])] = fmt.Sprint(line["scale"])
		}
	}
	if lines == 0 {
		t.Fatal("no alert lines")
	}
	if scales["busy"] != "1m" {
		t.Errorf("busy tenant's usage episode on scale %q, want 1m", scales["busy"])
	}
	if s := scales["small"]; s != "5m" && s != "15m" && s != "60m" {
		t.Errorf("small tenant's usage episode on scale %q, want a long window", s)
	}
}

// TestAnomalyEvalReportsBands runs a small evaluation and checks that it
// reports recall, false alerts, delay and resolution per volume band, and
// exits 0 or 1 (goals missed), never 2.
func TestAnomalyEvalReportsBands(t *testing.T) {
	out, _, err := runCLI(t, "anomaly-eval", "--tenants", "40", "--days", "10", "--seed", "7")
	var ee *exitError
	if err != nil && !(errors.As(err, &ee) && ee.code == 1) {
		t.Fatalf("anomaly-eval: %v", err)
	}
	for _, want := range []string{"events/min", "< 1 ", "1-10 ", "10-100 ", "> 100 ", "recall, 3x spikes", "false alerts per tenant-day", "resolve after end"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

// rollupCSV writes minutes of api_request rollups of one tenant at 300
// events a minute, 5x that from spikeAt on, and returns the file.
func rollupCSV(t *testing.T, minutes, spikeAt int) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("minute,tenant_id,kind,count,quantity,errors,latency_p95_ms\n")
	start := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	for m := range minutes {
		n := 300 + m%7
		if m >= spikeAt {
			n *= 5
		}
		fmt.Fprintf(&b, "%s,acme,api_request,%d,%d,0,20\n", start.Add(time.Duration(m)*time.Minute).Format(time.RFC3339), n, n)
	}
	path := filepath.Join(t.TempDir(), "rollups.csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestReplaySaysWhenHistoryIsTooShort: five minutes of history under the
// default warmup of 60 windows cannot be judged, and replay says so on
// stderr instead of printing nothing; with a warmup the history covers,
// the spike is found and the summary counts it.
func TestReplaySaysWhenHistoryIsTooShort(t *testing.T) {
	t.Chdir(t.TempDir())
	out, errOut, err := runCLI(t, "replay", "--input", rollupCSV(t, 5, 3))
	if err != nil || out != "" {
		t.Fatalf("short history: %v, stdout %q; want exit 0 and no episodes", err, out)
	}
	for _, want := range []string{"history too short to judge: 5 one-minute windows", "anomaly.warmup_windows = 60", "TENANTGUARD_ANOMALY_WARMUP_WINDOWS"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("short history: stderr %q does not say %q", errOut, want)
		}
	}

	// At the demo's warmup there is no shorter one to suggest.
	t.Setenv("TENANTGUARD_ANOMALY_WARMUP_WINDOWS", "3")
	if _, errOut, _ := runCLI(t, "replay", "--input", rollupCSV(t, 2, 9)); !strings.Contains(errOut, "too short") ||
		strings.Contains(errOut, "shorter warmup") {
		t.Errorf("short history at warmup 3: stderr %q, want too short and no shorter warmup suggested", errOut)
	}

	t.Setenv("TENANTGUARD_ANOMALY_WARMUP_WINDOWS", "10")
	out, errOut, err = runCLI(t, "replay", "--input", rollupCSV(t, 40, 25))
	if err != nil || !strings.Contains(out, `"tenant_id":"acme"`) || !strings.Contains(out, `"metric":"usage"`) {
		t.Fatalf("long enough history: %v, stdout %q, stderr %q; want acme's usage episode", err, out, errOut)
	}
	if !strings.Contains(errOut, "replay: 40 one-minute windows") || strings.Contains(errOut, "too short") {
		t.Errorf("long enough history: stderr %q, want the summary of 40 windows", errOut)
	}
}
