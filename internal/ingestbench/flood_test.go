package ingestbench

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestFloodCheck: the run fails when the others' p99 more than doubles or
// when an accepted flood event is missing or stored twice.
func TestFloodCheck(t *testing.T) {
	ok := FloodPhase{FloodAccepted: 100, FloodStored: 100, FloodDistinct: 100, P99: 900 * time.Millisecond}
	tests := []struct {
		name    string
		calm    time.Duration
		flood   FloodPhase
		wantErr bool
	}{
		{"within 2x, all stored once", 500 * time.Millisecond, ok, false},
		{"p99 over 2x", 400 * time.Millisecond, ok, true},
		{"a flood event lost", 500 * time.Millisecond, FloodPhase{FloodAccepted: 100, FloodStored: 99, FloodDistinct: 99, P99: ok.P99}, true},
		{"a flood event stored twice", 500 * time.Millisecond, FloodPhase{FloodAccepted: 100, FloodStored: 101, FloodDistinct: 100, P99: ok.P99}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &FloodResult{Calm: FloodPhase{P99: tt.calm}, Flood: tt.flood}
			err := r.Check()
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("got error %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrFloodTarget) {
				t.Errorf("got %v, want it to wrap ErrFloodTarget", err)
			}
		})
	}
}

// TestFloodPrint: the lines scripts compare from run to run.
func TestFloodPrint(t *testing.T) {
	r := &FloodResult{Tenants: 1000, Capacity: 40000, Measured: true, TenantRate: 10000, Phase: 20 * time.Second,
		Calm:  FloodPhase{Rate: 20000, P99: 500 * time.Millisecond},
		Flood: FloodPhase{Rate: 20000, P99: 600 * time.Millisecond, FloodOffered: 400000, FloodAccepted: 10, FloodStored: 10, FloodDistinct: 10}}
	var b bytes.Buffer
	r.Print(&b)
	for _, want := range []string{"capacity", "publish->queryable   no flood: p50 0s  p99 500ms", "p99 ratio 1.20 (target <= 2)", "flooding tenant      accepted 10"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}
