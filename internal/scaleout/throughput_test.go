package scaleout

import (
	"context"
	"errors"
	"flag"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

var throughputEvents = flag.Int("scaleout.throughput", 0, "TestReplicaThroughput: events of the backlog each run drains (0 skips it)")

// TestReplicaThroughput measures how fast one and two `tenantguard run`
// replicas (every stage on, as deployed) drain the same backlog of
// -scaleout.throughput events of 10,000 tenants from JetStream into one
// ClickHouse, alternating 1, 2, 1, 2 so load drift favours neither. The
// rate is taken between 20% and 80% of the backlog stored, past the
// start-up and the claiming of partitions. It runs only with the flag;
// see docs/scale-out.md ("Tested").
func TestReplicaThroughput(t *testing.T) {
	n := *throughputEvents
	if n <= 0 {
		t.Skip("measurement: run with -scaleout.throughput=400000")
	}
	bin := testenv.Binary(t)
	rates := map[int][]float64{}
	for _, k := range []int{1, 2, 1, 2} {
		rate := drain(t, bin, k, n)
		rates[k] = append(rates[k], rate)
		t.Logf("%d replica(s): %.0f events/s", k, rate)
	}
	one := (rates[1][0] + rates[1][1]) / 2
	two := (rates[2][0] + rates[2][1]) / 2
	t.Logf("drain of %d events: 1 replica %.0f events/s, 2 replicas %.0f events/s: %.2fx (goal >= 0.9x on this 2-core machine)", n, one, two, two/one)
}

// drain publishes n events while no replica runs, then starts k replicas
// and returns the events/s they store between 20% and 80% of n.
func drain(t *testing.T, bin string, k, n int) float64 {
	t.Helper()
	ns := testenv.NATS(t)
	ch, db := testenv.ClickHouse(t)
	env := []string{"TENANTGUARD_NATS_URL=" + ns.URL, "TENANTGUARD_CLICKHOUSE_ADDR=" + ch.Addr, "TENANTGUARD_CLICKHOUSE_DATABASE=" + db,
		"TENANTGUARD_LOG_LEVEL=warn", "TENANTGUARD_COLLECTOR_PARTITIONS=" + strconv.Itoa(partitions), "TENANTGUARD_COLLECTOR_LEASE_TTL=3s"}
	listen := func() []string {
		return []string{"TENANTGUARD_METRICS_LISTEN=127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)),
			"TENANTGUARD_API_LISTEN=127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))}
	}
	// A first start creates the schema, the stream and the buckets.
	l := listen()
	first := testenv.StartProc(t, "setup", exec.Command(bin, "run"), append(env, l...)...)
	first.WaitHTTP200(t, "http://"+l[1][len("TENANTGUARD_API_LISTEN="):]+"/readyz", 2*time.Minute)
	first.Stop()

	nc := testenv.Connect(t, ns.URL)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i := range n {
		e := event.Event{ID: "b" + strconv.Itoa(i), TenantID: "t" + strconv.Itoa(i%10000), Kind: event.KindAPIRequest,
			Time: now, Quantity: 1, LatencyMs: 12.5, StatusCode: 200, Route: "GET /v1/invoices", Service: "bench"}
		m := nats.NewMsg(event.Subject(e.TenantID, e.Kind))
		m.Data = event.AppendJSON(nil, &e)
		m.Header.Set(event.HeaderMsgID, e.ID)
		for {
			_, err := js.PublishMsgAsync(m)
			if err == nil {
				break
			}
			if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond) // 4096 acks outstanding: let some come back
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		t.Fatal("backlog not published in 2 minutes")
	}

	conn := ch.Conn(t, db)
	for i := range k {
		p := testenv.StartProc(t, "replica-"+strconv.Itoa(i+1), exec.Command(bin, "run"), append(env, listen()...)...)
		defer p.Stop() // the next run has the machine to itself
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var at20, at80 time.Time
	var n20, n80 uint64
	for at80.IsZero() {
		var got uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".events").Scan(&got); err != nil {
			t.Fatal(err)
		}
		switch {
		case at20.IsZero() && got >= uint64(n)/5:
			at20, n20 = time.Now(), got
		case !at20.IsZero() && got >= uint64(n)*4/5:
			at80, n80 = time.Now(), got
		}
		if ctx.Err() != nil {
			t.Fatalf("%d replicas: %d of %d events stored after 10 minutes", k, got, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return float64(n80-n20) / at80.Sub(at20).Seconds()
}
