package collector

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
)

// publishTenant sends n events of one tenant with ids prefix-i and waits
// for JetStream's acks.
func publishTenant(t *testing.T, js jetstream.JetStream, tenant, prefix string, n int) {
	t.Helper()
	now := time.Now().UTC()
	for i := 0; i < n; i++ {
		e := event.Event{ID: prefix + strconv.Itoa(i), TenantID: tenant, Kind: "api_request", Time: now, Quantity: 1, StatusCode: 200}
		m := nats.NewMsg(event.Subject(e.TenantID, e.Kind))
		m.Data = event.AppendJSON(nil, &e)
		m.Header.Set(event.HeaderMsgID, e.ID)
		if _, err := js.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		t.Fatal("publish: no acks after 60s")
	}
}

func tenantRows(t *testing.T, r *rig, tenant string) uint64 {
	t.Helper()
	var n uint64
	if err := r.store.Conn().QueryRow(context.Background(),
		"SELECT count() FROM "+r.store.Table("events")+" WHERE tenant_id = ?", tenant).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFloodedPartitionDoesNotHoldOthersBack: one tenant's backlog fills
// its partition; events other tenants publish meanwhile are stored within
// a few batches of the flood, not after it, and in the end every event is
// stored exactly once.
func TestFloodedPartitionDoesNotHoldOthersBack(t *testing.T) {
	r := newRig(t, nil)
	const floodN, batch = 60000, 1000
	js, err := jetstream.New(r.nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	publishTenant(t, js, "flood", "f-", floodN)
	cfg := testConfig()
	cfg.BatchMaxRows = batch
	r.start(t, cfg)
	deadline := time.Now().Add(60 * time.Second)
	for tenantRows(t, r, "flood") < 2*batch {
		if time.Now().After(deadline) {
			t.Fatal("the flood's backlog is not being stored")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Tenants outside the flood's partition.
	var others []string
	for i := 0; len(others) < 10; i++ {
		id := "o" + strconv.Itoa(i)
		if event.Partition(id, cfg.Partitions) != event.Partition("flood", cfg.Partitions) {
			others = append(others, id)
		}
	}
	atPublish := tenantRows(t, r, "flood")
	for _, o := range others {
		publishTenant(t, js, o, o+"-", 20)
	}
	var stored, floodThen uint64
	for {
		floodThen = tenantRows(t, r, "flood")
		var n uint64
		if err := r.store.Conn().QueryRow(context.Background(),
			"SELECT count() FROM "+r.store.Table("events")+" WHERE tenant_id != 'flood'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if stored = n; stored == uint64(20*len(others)) || floodThen == floodN {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the others were all stored after %d more flood events", floodThen-atPublish)
	// Each other tenant waits behind at most a bounded share of the
	// flood: a few batches, here out of 58 still to go.
	if ahead := floodThen - atPublish; stored != uint64(20*len(others)) || ahead > 6*batch {
		t.Errorf("the others' %d events were stored (%d of them) after %d more flood events; want all, after at most %d",
			20*len(others), stored, ahead, 6*batch)
	}
	waitRows(t, r.store, floodN+uint64(20*len(others)), 120*time.Second)
}
