package collector

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

// waitReadiness polls c.Ready until want says yes, and fails after timeout.
func waitReadiness(t *testing.T, c *Collector, what string, timeout time.Duration, want func(error) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := c.Ready()
		if want(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ready() got %v after %s, want %s", err, timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReadyReportsStalledConsumer: while ClickHouse hangs (SIGSTOP: an
// insert neither succeeds nor fails) and messages are pending, Ready names
// the stall once stall_timeout has passed, and clears when ClickHouse
// resumes, losing nothing.
func TestReadyReportsStalledConsumer(t *testing.T) {
	ch := testenv.NewClickHouseServer(t)
	r := newRig(t, ch)
	cfg := testConfig()
	cfg.StallTimeout = 2 * time.Second
	c := r.start(t, cfg)
	waitReadiness(t, c, "nil once consuming", 10*time.Second, func(err error) bool { return err == nil })

	publish(t, r.js, "s-", 0, 100, 5)
	waitRows(t, r.store, 100, 30*time.Second)
	if err := c.Ready(); err != nil {
		t.Fatalf("Ready() after storing got %v, want nil", err)
	}

	if err := syscall.Kill(-ch.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(-ch.PID(), syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	stopped := time.Now()
	publish(t, r.js, "s-", 100, 100, 5)
	waitReadiness(t, c, "a stalled consumer", 15*time.Second, func(err error) bool {
		return err != nil && strings.Contains(err.Error(), "stalled")
	})
	if took := time.Since(stopped); took < cfg.StallTimeout {
		t.Errorf("stalled after %s, want not before stall_timeout %s", took, cfg.StallTimeout)
	}
	t.Logf("stall reported %s after ClickHouse stopped: %v", time.Since(stopped).Round(time.Millisecond), c.Ready())

	resume()
	waitReadiness(t, c, "nil once ClickHouse resumed", time.Minute, func(err error) bool { return err == nil })
	waitRows(t, r.store, 200, time.Minute)
}
