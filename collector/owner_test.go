package collector

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/partition"
)

// ownerView is a replica's Handover and Observer at once: it records the
// owned tenants it was last told, the events it saw per tenant, and every
// event of a tenant it was not told it owns.
type ownerView struct {
	mu         sync.Mutex
	owns       func(string) bool
	calls      int
	seen       map[string]int
	firstSeen  map[string]time.Time
	violations []string
}

func newOwnerView() *ownerView {
	return &ownerView{seen: map[string]int{}, firstSeen: map[string]time.Time{}}
}

func (v *ownerView) Owned(_ context.Context, owns func(string) bool, _ bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.owns, v.calls = owns, v.calls+1
	return nil
}

func (v *ownerView) Observe(e *event.Event, _ float64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.seen[e.TenantID]++; v.seen[e.TenantID] == 1 {
		v.firstSeen[e.TenantID] = time.Now()
	}
	if v.owns == nil || !v.owns(e.TenantID) {
		v.violations = append(v.violations, e.TenantID)
	}
}

func (v *ownerView) count(tenant string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.seen[tenant]
}

// replica is one collector of a multi-replica test, on its own connection.
type replica struct {
	c      *Collector
	view   *ownerView
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func (r *rig) startReplica(t *testing.T, cfg Config) *replica {
	t.Helper()
	nc, err := nats.Connect(r.nats.URL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	rep := &replica{view: newOwnerView(), reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	rep.c, err = New(cfg, Deps{JetStream: js, Store: r.store, Pricer: r.book, Observers: []Observer{rep.view},
		Handover: rep.view, Registry: rep.reg,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rep.cancel = cancel
	go func() { rep.done <- rep.c.Run(ctx) }()
	t.Cleanup(rep.stop)
	return rep
}

// stop cancels the replica and waits for Run; safe to call twice.
func (rep *replica) stop() {
	rep.cancel()
	if rep.done != nil {
		<-rep.done
		rep.done = nil
	}
}

// leases reads the partitions bucket: slot key -> holder replica id.
func (r *rig) leases(t *testing.T) map[string]string {
	t.Helper()
	kv, err := r.js.KeyValue(context.Background(), partition.Bucket)
	if err != nil {
		return nil
	}
	out := map[string]string{}
	l, err := kv.ListKeysFiltered(context.Background(), "slot.>")
	if err != nil {
		t.Fatal(err)
	}
	for k := range l.Keys() {
		if e, err := kv.Get(context.Background(), k); err == nil {
			out[k] = string(e.Value())
		}
	}
	return out
}

// waitBalanced waits until every slot is held, by exactly one of reps as
// each replica and the bucket say, each with at most ceil(slots/len(reps)).
func waitBalanced(t *testing.T, r *rig, cfg Config, reps []*replica, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	slots := cfg.Partitions + 1
	target := (slots + len(reps) - 1) / len(reps)
	var problem string
	for time.Since(start) < timeout {
		problem = ""
		holder := map[int]string{}
		for _, rep := range reps {
			owned := rep.c.Owned()
			if len(owned) > target || len(owned) == 0 {
				problem = rep.c.ReplicaID() + " holds " + strconv.Itoa(len(owned)) + " slots"
			}
			if got := testutil.ToFloat64(gaugeOf(t, rep.reg)); got != float64(len(owned)) {
				problem = "tenantguard_partitions_owned " + strconv.FormatFloat(got, 'f', -1, 64) + ", holds " + strconv.Itoa(len(owned))
			}
			for _, s := range owned {
				if other, dup := holder[s]; dup {
					t.Fatalf("slot %d held by %s and %s", s, other, rep.c.ReplicaID())
				}
				holder[s] = rep.c.ReplicaID()
			}
		}
		leases := r.leases(t)
		for s := range slots {
			key := "slot." + strconv.Itoa(s)
			if s == cfg.Partitions {
				key = "slot.strays"
			}
			if holder[s] == "" || leases[key] != holder[s] {
				problem = key + ": lease of " + leases[key] + ", consumed by " + holder[s]
			}
		}
		if problem == "" {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("slots not balanced after %s: %s", timeout, problem)
	return 0
}

func gaugeOf(t *testing.T, reg *prometheus.Registry) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tenantguard_partitions_owned"})
	for _, mf := range mfs {
		if mf.GetName() == "tenantguard_partitions_owned" {
			g.Set(mf.GetMetric()[0].GetGauge().GetValue())
			return g
		}
	}
	t.Fatal("tenantguard_partitions_owned not registered")
	return nil
}

// checkOneOwner checks each tenant's events were all observed by one
// replica, and none by a replica not told it owns the tenant.
func checkOneOwner(t *testing.T, reps []*replica, tenants, perTenant int) {
	t.Helper()
	for i := range tenants {
		tenant := "t" + strconv.Itoa(i)
		var by []string
		total := 0
		for _, rep := range reps {
			if n := rep.view.count(tenant); n > 0 {
				by = append(by, rep.c.ReplicaID()+"="+strconv.Itoa(n))
				total += n
			}
		}
		if len(by) != 1 || total != perTenant {
			t.Fatalf("tenant %s: observed by %v, want all %d events by one replica", tenant, by, perTenant)
		}
	}
	for _, rep := range reps {
		rep.view.mu.Lock()
		v := slices.Clone(rep.view.violations)
		rep.view.mu.Unlock()
		if len(v) > 0 {
			t.Fatalf("%s observed %d events of tenants it was not told it owns, first %s", rep.c.ReplicaID(), len(v), v[0])
		}
	}
}

// TestReplicasOwnEachPartitionOnce runs three collectors on one NATS and
// one ClickHouse: every slot has one holder, every event is stored once,
// each tenant's events are all observed by one replica, which the Handover
// told it owns the tenant first. When one replica stops, its slots move to
// the other two and nothing is lost or stored twice.
func TestReplicasOwnEachPartitionOnce(t *testing.T) {
	r := newRig(t, nil)
	cfg := testConfig()
	reps := []*replica{r.startReplica(t, cfg), r.startReplica(t, cfg), r.startReplica(t, cfg)}
	took := waitBalanced(t, r, cfg, reps, 30*time.Second)
	t.Logf("3 replicas balanced in %s", took.Round(time.Millisecond))
	const tenants, perTenant = 300, 50
	publish(t, r.js, "r-", 0, tenants*perTenant, tenants)
	waitRows(t, r.store, tenants*perTenant, 60*time.Second)
	checkOneOwner(t, reps, tenants, perTenant)
	for _, rep := range reps {
		if rep.view.calls == 0 {
			t.Fatalf("%s: Handover never called", rep.c.ReplicaID())
		}
	}

	gone := reps[2]
	movedSlots := gone.c.Owned()
	done := make(chan struct{})
	go func() {
		defer close(done)
		publish(t, r.js, "r2-", 0, 20000, tenants)
	}()
	gone.stop()
	took = waitBalanced(t, r, cfg, reps[:2], 30*time.Second)
	t.Logf("slots %v of a stopped replica moved in %s", movedSlots, took.Round(time.Millisecond))
	<-done
	waitRows(t, r.store, tenants*perTenant+20000, 60*time.Second)
	for _, rep := range reps {
		rep.view.mu.Lock()
		n := len(rep.view.violations)
		rep.view.mu.Unlock()
		if n > 0 {
			t.Fatalf("%s observed %d events of tenants it was not told it owns", rep.c.ReplicaID(), n)
		}
	}
}

// TestKilledReplicaPartitionsMove SIGKILLs a replica running in a child
// process while events stream in: its partitions move to the survivor,
// which consumes them within ack_wait + 5 s of the kill, and every event
// is stored exactly once. The leases live the default lease_ttl; ack_wait
// is 5 s.
func TestKilledReplicaPartitionsMove(t *testing.T) {
	r := newRig(t, nil)
	cfg := testConfig()
	cfg.LeaseTTL, cfg.AckWait = DefaultConfig().LeaseTTL, 5*time.Second
	a := r.startReplica(t, cfg)
	waitBalanced(t, r, cfg, []*replica{a}, 30*time.Second)
	child := startChild(t, r, "TG_LEASE_TTL="+cfg.LeaseTTL.String(), "TG_ACK_WAIT="+cfg.AckWait.String())
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	// Wait until the child holds slots: the bucket names another holder.
	var childSlots []int
	deadline := time.Now().Add(30 * time.Second)
	for len(childSlots) == 0 || len(a.c.Owned()) > (cfg.Partitions+2)/2 {
		if time.Now().After(deadline) {
			t.Fatalf("the child replica holds no slot after 30 s; leases %v", r.leases(t))
		}
		time.Sleep(100 * time.Millisecond)
		childSlots = childSlots[:0]
		for k, holder := range r.leases(t) {
			if holder != a.c.ReplicaID() && k != "slot.strays" {
				s, _ := strconv.Atoi(k[len("slot."):])
				childSlots = append(childSlots, s)
			}
		}
	}
	const tenants = 200
	probe := ""
	for i := range tenants {
		if slices.Contains(childSlots, event.Partition("t"+strconv.Itoa(i), cfg.Partitions)) {
			probe = "t" + strconv.Itoa(i)
			break
		}
	}
	if probe == "" {
		t.Fatalf("no tenant of %d falls in the child's slots %v", tenants, childSlots)
	}
	stop := make(chan struct{})
	published := make(chan int, 1)
	var stopOnce sync.Once
	stopPublishing := func() int { stopOnce.Do(func() { close(stop) }); return <-published }
	defer stopPublishing()
	go func() {
		n := 0
		for {
			publish(t, r.js, "k-", n, 1000, tenants)
			n += 1000
			select {
			case <-stop:
				published <- n
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	time.Sleep(time.Second) // the child is consuming mid-stream
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	_ = child.Wait()
	// The probe tenant was the child's: the survivor sees it only once it
	// has taken the child's slot over.
	for a.view.count(probe) == 0 {
		if time.Since(killed) > 60*time.Second {
			t.Fatalf("survivor has not consumed tenant %s 60 s after the kill", probe)
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.view.mu.Lock()
	handover := a.view.firstSeen[probe].Sub(killed)
	a.view.mu.Unlock()
	t.Logf("handover: SIGKILL to the survivor consuming the dead replica's partition in %s (lease_ttl %s, ack_wait %s)",
		handover.Round(time.Millisecond), cfg.LeaseTTL, cfg.AckWait)
	if limit := cfg.AckWait + 5*time.Second; handover > limit {
		t.Fatalf("handover took %s, want at most ack_wait + 5s = %s", handover, limit)
	}
	waitBalanced(t, r, cfg, []*replica{a}, 30*time.Second)
	n := stopPublishing()
	published <- n
	waitRows(t, r.store, uint64(n), 60*time.Second)
}
