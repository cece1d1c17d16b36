package collector

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
)

// consumerStates returns, per slot durable, the consumer's info; a slot
// without a consumer is left out.
func consumerStates(t *testing.T, r *rig, name func(durable string, slot, partitions int) string) map[string]*jetstream.ConsumerInfo {
	t.Helper()
	cfg := testConfig()
	out := map[string]*jetstream.ConsumerInfo{}
	for slot := 0; slot <= cfg.Partitions; slot++ {
		d := name(cfg.Durable, slot, cfg.Partitions)
		cons, err := r.js.Consumer(context.Background(), event.UsageStream, d)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out[d] = info
	}
	return out
}

// TestAckAllKillMidBatchStoresOnce SIGKILLs a collector while it holds
// messages delivered but unacked, some of them already in ClickHouse, and
// starts another: every event is stored exactly once, long before
// ack_wait (2 minutes) could redeliver anything. An AckAll ack of the new
// owner's first batch would ack the dead owner's messages unstored, and a
// redelivery the new owner takes for a first delivery would be stored
// again; dedup_horizon is off, so only the redelivery checks guard that.
func TestAckAllKillMidBatchStoresOnce(t *testing.T) {
	r := newRig(t, nil)
	env := []string{"TG_ACK_WAIT=2m", "TG_DEDUP_HORIZON=false"}
	const tenants, chunk = 500, 2000
	var published atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := 0; ; n += chunk {
			select {
			case <-stop:
				return
			default:
			}
			publish(t, r.js, "ka-", n, chunk, tenants)
			published.Store(int64(n + chunk))
			time.Sleep(10 * time.Millisecond)
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-done
	}()
	kills := 0
	child := startChild(t, r, env...)
	for kills < 3 {
		// Kill once messages are in flight and some rows stored.
		deadline := time.Now().Add(30 * time.Second)
		var unacked int
		for {
			rows, _ := counts(t, r.store)
			if unacked = ackPending(t, r); unacked > 0 && rows > 0 && published.Load() > int64(kills+1)*10000 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no message in flight with rows stored after 30 s (unacked %d, rows %d)", unacked, rows)
			}
			time.Sleep(time.Duration(5+kills*7) * time.Millisecond)
		}
		if err := child.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = child.Wait()
		kills++
		left := ackPending(t, r)
		rows, _ := counts(t, r.store)
		t.Logf("kill %d: %d messages delivered and unacked, %d rows stored", kills, left, rows)
		if left == 0 {
			t.Fatalf("kill %d left no message unacked, so it tested nothing", kills)
		}
		child = startChild(t, r, env...)
	}
	close(stop)
	<-done
	start := time.Now()
	waitRows(t, r.store, uint64(published.Load()), 90*time.Second)
	t.Logf("every event stored once %s after the last publish (ack_wait 2m)", time.Since(start).Round(time.Millisecond))
	_ = child.Process.Signal(syscall.SIGTERM)
	_ = child.Wait()
	for d, info := range consumerStates(t, r, SlotDurable) {
		if info.Config.AckPolicy != jetstream.AckAllPolicy {
			t.Fatalf("%s: ack policy %v, want AckAll", d, info.Config.AckPolicy)
		}
	}
}

// TestExplicitAckConsumerUpgraded leaves the explicit-ack consumers of an
// earlier version in every state an old collector could leave them:
// messages stored and acked, stored and unacked, acked above the ack floor,
// and delivered but not stored. The collector replaces them with AckAll
// consumers that start after the old ack floor, deletes them, and stores
// every event exactly once, with dedup_horizon off.
func TestExplicitAckConsumerUpgraded(t *testing.T) {
	r := newRig(t, nil)
	cfg := testConfig()
	cfg.DedupHorizon = false
	const tenants, before, after = 60, 3000, 2000
	publish(t, r.js, "up-", 0, before, tenants)

	// The old collector: explicit acks, per slot.
	v, err := event.NewValidator(event.Rules{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	floors := map[int]uint64{}
	var stored int
	for slot := 0; slot <= cfg.Partitions; slot++ {
		filter := event.UsageSubjects
		if slot < cfg.Partitions {
			filter = event.PartitionSubjects(slot)
		}
		legacy := LegacySlotDurable(cfg.Durable, slot, cfg.Partitions)
		cons, err := r.js.CreateOrUpdateConsumer(ctx, event.UsageStream, jetstream.ConsumerConfig{
			Durable: legacy, AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Hour, FilterSubject: filter, MaxAckPending: 40000})
		if err != nil {
			t.Fatal(err)
		}
		info, _ := cons.Info(ctx)
		n := int(info.NumPending)
		if n == 0 {
			continue
		}
		batch, err := cons.FetchNoWait(n)
		if err != nil {
			t.Fatal(err)
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if len(msgs) != n {
			t.Fatalf("%s: fetched %d of %d messages", legacy, len(msgs), n)
		}
		var rows []store.Row
		for i, m := range msgs {
			frac := float64(i) / float64(n)
			if frac >= 0.8 {
				continue // delivered, never stored
			}
			subject, err := event.OriginalSubject(m.Subject(), cfg.Partitions)
			if err != nil {
				t.Fatal(err)
			}
			e := new(event.Event)
			if verr := v.Parse(m.Data(), subject, e); verr != nil {
				t.Fatal(verr)
			}
			unit := decimal.RequireFromString("0.0001")
			rows = append(rows, store.Row{Event: e, Plan: "default", UnitPrice: unit, Cost: unit, PriceVersion: "v"})
			if frac < 0.5 || i%2 == 0 { // stored and acked: a floor, then gaps above it
				if err := m.DoubleAck(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := r.store.InsertEvents(ctx, rows, time.Now()); err != nil {
			t.Fatal(err)
		}
		stored += len(rows)
		info, _ = cons.Info(ctx)
		floors[slot] = info.AckFloor.Stream
	}
	t.Logf("the old consumers stored %d of %d events", stored, before)

	r.start(t, cfg)
	publish(t, r.js, "up-", before, after, tenants)
	waitRows(t, r.store, before+after, 60*time.Second)
	if old := consumerStates(t, r, LegacySlotDurable); len(old) > 0 {
		t.Fatalf("%d explicit-ack consumers left, want them deleted", len(old))
	}
	states := consumerStates(t, r, SlotDurable)
	for slot, floor := range floors {
		d := SlotDurable(cfg.Durable, slot, cfg.Partitions)
		info, ok := states[d]
		if !ok {
			t.Fatalf("%s: no consumer", d)
		}
		if info.Config.AckPolicy != jetstream.AckAllPolicy {
			t.Fatalf("%s: ack policy %v, want AckAll", d, info.Config.AckPolicy)
		}
		if info.Config.DeliverPolicy != jetstream.DeliverByStartSequencePolicy || info.Config.OptStartSeq != floor+1 {
			t.Fatalf("%s: deliver policy %v from %d, want by start sequence from the old ack floor + 1 = %d",
				d, info.Config.DeliverPolicy, info.Config.OptStartSeq, floor+1)
		}
		if got, _ := strconv.ParseUint(info.Config.Metadata[verifyKey], 10, 64); got < before {
			t.Fatalf("%s: verify bound %d, want at least %d", d, got, before)
		}
	}
}

// batchRowsHistogram returns the count and sum of
// tenantguard_collector_batch_rows.
func batchRowsHistogram(t *testing.T, reg *prometheus.Registry) (count uint64, sum float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "tenantguard_collector_batch_rows" {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	t.Fatal("tenantguard_collector_batch_rows not registered")
	return 0, 0
}

// TestBatchesAdaptToLoad: with batch_max_wait far off, an event published
// to an idle collector is stored within batch_min_wait plus an insert,
// and a burst is stored in batches that grow with it rather than one
// batch per message.
func TestBatchesAdaptToLoad(t *testing.T) {
	r := newRig(t, nil)
	cfg := testConfig()
	cfg.BatchMinWait, cfg.BatchMaxWait = 5*time.Millisecond, 20*time.Second
	cfg.BatchMinInterval = 0 // each idle event follows the previous flush at once
	_, reg := r.startWithRegistry(t, cfg)
	waitRows(t, r.store, 0, time.Second)
	for i := range 5 {
		start := time.Now()
		publish(t, r.js, "idle-", i, 1, 5)
		for {
			if rows, _ := counts(t, r.store); rows == uint64(i+1) {
				break
			}
			if time.Since(start) > 2*time.Second {
				t.Fatalf("idle event %d not stored after 2 s, want within batch_min_wait plus an insert (batch_max_wait %s)", i, cfg.BatchMaxWait)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("idle event %d queryable %s after its publish was acked", i, time.Since(start).Round(time.Millisecond))
	}
	// The histogram is updated just after the insert.
	n0, sum0 := batchRowsHistogram(t, reg)
	for deadline := time.Now().Add(5 * time.Second); sum0 != 5 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		n0, sum0 = batchRowsHistogram(t, reg)
	}
	const burst = 40000
	publish(t, r.js, "burst-", 0, burst, 500)
	waitRows(t, r.store, 5+burst, 60*time.Second) // and half a second more
	n, sum := batchRowsHistogram(t, reg)
	batches, rows := n-n0, sum-sum0
	t.Logf("burst of %d events stored in %d batches, %.0f rows each on average", burst, batches, rows/float64(batches))
	if rows != burst {
		t.Fatalf("got %.0f rows in the burst's batches, want %d", rows, burst)
	}
	if avg := rows / float64(batches); avg < 100 {
		t.Fatalf("burst stored in batches of %.0f rows on average, want batches that grow with the load (>= 100)", avg)
	}
}

// TestBatchMinIntervalSpacesFlushes: under a steady trickle, flushes come
// at most once per batch_min_interval (a few large ClickHouse blocks, not
// one per insert round trip), and an event after a quiet spell longer than
// the interval is still stored within batch_min_wait plus an insert.
func TestBatchMinIntervalSpacesFlushes(t *testing.T) {
	r := newRig(t, nil)
	cfg := testConfig()
	cfg.BatchMinWait, cfg.BatchMaxWait, cfg.BatchMinInterval = 5*time.Millisecond, 5*time.Second, 400*time.Millisecond
	_, reg := r.startWithRegistry(t, cfg)
	waitRows(t, r.store, 0, time.Second)
	const rounds, each = 100, 20 // 2000 events over about 2 s
	start := time.Now()
	for i := range rounds {
		publish(t, r.js, "steady-", i*each, each, 50)
		time.Sleep(20 * time.Millisecond)
	}
	spent := time.Since(start)
	waitRows(t, r.store, rounds*each, 30*time.Second)
	batches, rows := batchRowsHistogram(t, reg)
	if rows != rounds*each {
		t.Fatalf("got %.0f rows in batches, want %d", rows, rounds*each)
	}
	if most := uint64(spent/cfg.BatchMinInterval) + 2; batches > most {
		t.Fatalf("got %d batches for %.0f events over %s, want at most %d (one per batch_min_interval %s)",
			batches, rows, spent.Round(time.Millisecond), most, cfg.BatchMinInterval)
	}
	t.Logf("%d events over %s stored in %d batches", rounds*each, spent.Round(time.Millisecond), batches)

	time.Sleep(2 * cfg.BatchMinInterval)
	quiet := time.Now()
	publish(t, r.js, "after-quiet-", 0, 1, 1)
	for {
		if n, _ := counts(t, r.store); n == rounds*each+1 {
			break
		}
		if got := time.Since(quiet); got >= cfg.BatchMinInterval {
			t.Fatalf("event after a quiet spell not stored %s after its publish, want within batch_min_wait plus an insert (batch_min_interval %s)",
				got.Round(time.Millisecond), cfg.BatchMinInterval)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("event after a quiet spell queryable %s after its publish was acked", time.Since(quiet).Round(time.Millisecond))
}
