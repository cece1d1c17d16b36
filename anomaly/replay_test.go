package anomaly

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
)

func TestParseCSV(t *testing.T) {
	h, err := ParseCSVHeader("minute,tenant_id,kind,count,quantity,errors,latency_p95_ms,cost")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		line string
		want Rollup
		err  string
	}{
		{"2026-01-05T10:00:30Z,acme,api_request,10,12.5,1,80,0.5", Rollup{Minute: time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC), TenantID: "acme", Kind: "api_request", Count: 10, Quantity: 12.5, Errors: 1, LatencyP95: 80, Cost: 0.5}, ""},
		{"1767607230,acme,ai_tokens,3,900,0,,", Rollup{Minute: time.Unix(1767607200, 0).UTC(), TenantID: "acme", Kind: "ai_tokens", Count: 3, Quantity: 900}, ""},
		{"2026-01-05T10:00:00Z,acme,api_request,10,1,0,80", Rollup{}, "got 7 fields, want 8"},
		{"yesterday,acme,api_request,1,1,0,1,0", Rollup{}, "bad minute"},
		{"2026-01-05T10:00:00Z,ac.me,api_request,1,1,0,1,0", Rollup{}, "bad tenant_id"},
		{"2026-01-05T10:00:00Z,acme,API,1,1,0,1,0", Rollup{}, "bad kind"},
		{"2026-01-05T10:00:00Z,acme,api_request,-1,1,0,1,0", Rollup{}, "bad count"},
		{"2026-01-05T10:00:00Z,acme,api_request,1,NaN,0,1,0", Rollup{}, "bad quantity"},
		{"2026-01-05T10:00:00Z,acme,api_request,1,1,0,-5,0", Rollup{}, "bad latency_p95_ms"},
	}
	for _, tc := range tests {
		var got Rollup
		err := h.Parse([]byte(tc.line), &got)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: got error %v, want %q", tc.line, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: got %+v, %v; want %+v", tc.line, got, err, tc.want)
		}
	}
	if _, err := ParseCSVHeader("minute,tenant_id,count"); err == nil || !strings.Contains(err.Error(), "kind") {
		t.Errorf("header without kind: got %v, want an error naming kind", err)
	}
}

func TestReplayReportsLinesAndStrict(t *testing.T) {
	in := "minute,tenant_id,kind,count,quantity,errors,latency_p95_ms\n" +
		"2026-01-05T00:00:00Z,acme,api_request,10,10,0,12\n" +
		"garbage\n" +
		"\n" +
		"2026-01-05T00:01:00Z,acme,api_request,x,10,0,12\n" +
		"2026-01-05T00:02:00Z,acme,api_request,10,10,0,12\n"
	var lines []int
	_, err := ReplayReader(context.Background(), DefaultConfig(), strings.NewReader(in), ReplayOptions{
		OnError: func(le *LineError) { lines = append(lines, le.Line) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || lines[0] != 3 || lines[1] != 5 {
		t.Errorf("bad lines reported %v, want [3 5]", lines)
	}
	_, err = ReplayReader(context.Background(), DefaultConfig(), strings.NewReader(in), ReplayOptions{Strict: true})
	var le *LineError
	if !errors.As(err, &le) || le.Line != 3 {
		t.Errorf("strict: got %v, want a LineError at line 3", err)
	}
}

// TestReplayNDJSONMatchesLive checks that replaying events gives the same
// episode as the live detector fed the same events.
func TestReplayNDJSONMatchesLive(t *testing.T) {
	var sb strings.Builder
	live, rec := newTestDetector(t, nil)
	var e event.Event
	ctx := context.Background()
	for m := 0; m < 200; m++ {
		n := 20
		if m >= 150 && m < 170 {
			n = 80
		}
		at := t0.Add(time.Duration(m) * time.Minute)
		for i := 0; i < n; i++ {
			e = event.Event{ID: "e", TenantID: "acme", Kind: "api_request", Quantity: 1, Time: at.Add(time.Duration(i) * time.Second)}
			sb.Write(event.AppendJSON(nil, &e))
			sb.WriteByte('\n')
			live.Observe(&e, 0)
		}
		live.Advance(ctx, at.Add(time.Minute+live.cfg.Lateness))
	}
	live.Advance(ctx, t0.Add(260*time.Minute))
	eps, err := ReplayReader(ctx, DefaultConfig(), strings.NewReader(sb.String()), ReplayOptions{Strict: true, Flush: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	alerts := only(rec.Alerts(), MetricUsage)
	if len(eps) == 0 || len(alerts) != 2 {
		t.Fatalf("replay %d episodes, live %d alerts; want 1 episode and 2 alerts", len(eps), len(alerts))
	}
	var usage []Episode
	for _, ep := range eps {
		if ep.Metric == MetricUsage {
			usage = append(usage, ep)
		}
	}
	if len(usage) != 1 || !usage[0].StartsAt.Equal(alerts[0].StartsAt) || usage[0].EndsAt == nil || !usage[0].EndsAt.Equal(alerts[1].EndsAt) {
		t.Fatalf("replay %+v differs from live %+v", usage, alerts)
	}
}

func FuzzParseCSVLine(f *testing.F) {
	f.Add([]byte("2026-01-05T10:00:30Z,acme,api_request,10,12.5,1,80"))
	f.Add([]byte("1767607230,acme,ai_tokens,3,900,0,"))
	f.Add([]byte(",,,,,,"))
	h, err := ParseCSVHeader(strings.Join(CSVColumns, ","))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var r Rollup
		if err := h.Parse(line, &r); err != nil {
			return
		}
		if !event.ValidTenantID(r.TenantID) || !event.ValidKindName(r.Kind) || r.Quantity < 0 || r.LatencyP95 < 0 || r.Minute.Second() != 0 {
			t.Fatalf("accepted invalid rollup %+v from %q", r, line)
		}
	})
}

func FuzzParseEventLine(f *testing.F) {
	f.Add([]byte(`{"id":"1","tenant_id":"acme","kind":"api_request","time":"2026-01-05T10:00:00Z","quantity":2}`))
	f.Add([]byte(`{"id":"1","tenant_id":"a.b","kind":"api_request","time":"2026-01-05T10:00:00Z"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		var e event.Event
		if err := ParseEventLine(line, &e); err != nil {
			return
		}
		if !event.ValidTenantID(e.TenantID) || !event.ValidKindName(e.Kind) || e.Time.IsZero() || !(e.Quantity >= 0) {
			t.Fatalf("accepted invalid event %+v from %q", e, line)
		}
		// The detector must take whatever the parser accepts.
		d, _ := New(DefaultConfig(), &Recorder{})
		d.Observe(&e, 0)
		d.Advance(context.Background(), e.Time.Add(2*time.Minute))
	})
}

func FuzzReplayReader(f *testing.F) {
	f.Add("minute,tenant_id,kind,count,quantity,errors,latency_p95_ms\n1767607230,acme,api_request,3,3,0,1\n")
	f.Add(`{"id":"1","tenant_id":"acme","kind":"api_request","time":"2026-01-05T10:00:00Z"}` + "\n{bad\n")
	f.Fuzz(func(t *testing.T, in string) {
		_, _ = ReplayReader(context.Background(), DefaultConfig(), strings.NewReader(in), ReplayOptions{Flush: time.Minute})
	})
}
