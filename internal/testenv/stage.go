package testenv

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// MetricSums gathers reg and returns each counter and gauge family's
// value summed over its labels, by family name.
func MetricSums(t testing.TB, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				out[mf.GetName()] += c.GetValue()
			} else if g := m.GetGauge(); g != nil {
				out[mf.GetName()] += g.GetValue()
			}
		}
	}
	return out
}

// RunStage runs a stage's Run in a goroutine until the test ends: then it
// cancels the context, waits for Run to return, and fails the test if Run
// returned an error.
func RunStage(t testing.TB, name string, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s run: %v", name, err)
		}
	})
}
