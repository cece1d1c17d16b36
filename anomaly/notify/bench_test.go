package notify

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/anomaly"
)

// BenchmarkSend measures what detection pays per alert with four sinks
// (Send copies the alert into four queues; delivery happens elsewhere).
func BenchmarkSend(b *testing.B) {
	var ns []Notifier
	for _, name := range []string{"a", "b", "c", "d"} {
		ns = append(ns, notifierFunc{name, func([]anomaly.Alert) {}})
	}
	f, err := New(testConfig(), Deps{Registerer: prometheus.NewRegistry(), Logger: quietLogger(), Notifiers: ns})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() { cancel(); <-done }()
	a := testAlert("acme")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		f.Send(ctx, a)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "alerts/s")
}
