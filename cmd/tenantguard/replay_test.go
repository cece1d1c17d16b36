package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math"
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
