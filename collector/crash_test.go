package collector

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/collector/store"
)

const childEnv = "TENANTGUARD_TEST_COLLECTOR_CHILD"

// runChild runs a collector in a child process of the test binary, so the
// test can SIGKILL it as a crash would.
func runChild() int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "child:", err); return 3 }
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(os.Getenv("TG_NATS_URL"), nats.MaxReconnects(-1))
	if err != nil {
		return fail(err)
	}
	js, _ := jetstream.New(nc)
	cfg := store.DefaultConfig()
	cfg.Addr, cfg.Database = []string{os.Getenv("TG_CH_ADDR")}, os.Getenv("TG_CH_DB")
	st, err := store.Open(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	book, _ := pricing.New(pricing.DefaultConfig(), nil)
	ccfg := testConfig()
	if d, err := time.ParseDuration(os.Getenv("TG_LEASE_TTL")); err == nil {
		ccfg.LeaseTTL = d
	}
	if d, err := time.ParseDuration(os.Getenv("TG_ACK_WAIT")); err == nil {
		ccfg.AckWait = d
	}
	if os.Getenv("TG_DEDUP_HORIZON") == "false" {
		ccfg.DedupHorizon = false
	}
	c, err := New(ccfg, Deps{JetStream: js, Store: st, Pricer: book,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return fail(err)
	}
	if err := c.Run(ctx); err != nil {
		return fail(err)
	}
	return 0
}

// startChild starts a collector child process; env adds variables, as
// TG_LEASE_TTL=5s, TG_ACK_WAIT=5s or TG_DEDUP_HORIZON=false.
func startChild(t *testing.T, r *rig, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "TG_NATS_URL="+r.nats.URL, "TG_CH_ADDR="+r.addr, "TG_CH_DB="+r.db)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd
}

// TestCollectorCrashesLoseAndDuplicateNothing kills the collector with
// SIGKILL several times while 200k events stream in, including publisher
// retries, and then checks ClickHouse holds each unique event exactly once.
func TestCollectorCrashesLoseAndDuplicateNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 200k events")
	}
	r := newRig(t, nil)
	const total, tenants = 200000, 1000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for from := 0; from < total; from += 10000 {
			publish(t, r.js, "c-", from, 10000, tenants)
			if from > 0 {
				publish(t, r.js, "c-", from-500, 500, tenants) // retries of the previous chunk
			}
			// Paced, so that the stream lasts past the third kill however
			// fast JetStream takes the chunks.
			time.Sleep(150 * time.Millisecond)
		}
	}()
	kills, midStream, interrupted := 0, 0, 0
	child := startChild(t, r)
	for kills < 4 {
		time.Sleep(time.Duration(500+kills*200) * time.Millisecond)
		select {
		case <-done:
		default:
			midStream++
		}
		rows, _ := counts(t, r.store)
		unacked := ackPending(t, r)
		if err := child.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = child.Wait()
		kills++
		interrupted += unacked
		t.Logf("kill %d: SIGKILL with %d rows stored and %d messages unacked", kills, rows, unacked)
		child = startChild(t, r)
	}
	<-done
	waitRows(t, r.store, total, 120*time.Second)
	_ = child.Process.Signal(syscall.SIGTERM)
	_ = child.Wait()
	if midStream < 3 {
		t.Fatalf("killed %d times while events streamed in, want at least 3", midStream)
	}
	if interrupted == 0 {
		t.Fatal("no kill interrupted a batch in flight, so the test proved nothing")
	}

}

// ackPending returns how many messages the collectors hold unacked.
func ackPending(t *testing.T, r *rig) int {
	t.Helper()
	cfg := testConfig()
	n := 0
	for slot := 0; slot <= cfg.Partitions; slot++ {
		cons, err := r.js.Consumer(context.Background(), event.UsageStream, SlotDurable(cfg.Durable, slot, cfg.Partitions))
		if err != nil {
			continue // not created yet
		}
		info, err := cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		n += info.NumAckPending
	}
	return n
}
