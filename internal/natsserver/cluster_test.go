package natsserver

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestClusterR3StreamSurvivesLeaderKill(t *testing.T) {
	c, err := StartCluster(ClusterOptions{Nodes: 3, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.WaitMetaLeader(ctx); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "r3.a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	old, err := c.WaitStreamLeader(ctx, "R3")
	if err != nil {
		t.Fatal(err)
	}
	c.Kill(old)
	now, err := c.WaitStreamLeader(ctx, "R3")
	if err != nil {
		t.Fatal(err)
	}
	if now == old {
		t.Fatalf("got leader n%d after killing it, want another node", now+1)
	}
	if _, err := js.Publish(ctx, "r3.b", []byte("2")); err != nil {
		t.Fatalf("publish after the leader was killed: %v", err)
	}
	if err := c.Restart(old); err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.State.Msgs, uint64(2); got != want {
		t.Errorf("got %d messages, want %d", got, want)
	}
	if got, want := info.Config.Replicas, 3; got != want {
		t.Errorf("got %d replicas, want %d", got, want)
	}
	if c.StreamLeader("NOPE") != -1 {
		t.Errorf("got a leader for a stream that does not exist")
	}
}
