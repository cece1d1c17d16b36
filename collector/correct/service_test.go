package correct

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

type effects struct {
	mu  sync.Mutex
	got []event.CorrectionEffect
}

func (e *effects) ObserveCorrection(c *event.CorrectionEffect) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, *c)
}

func (e *effects) list() []event.CorrectionEffect {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]event.CorrectionEffect(nil), e.got...)
}

func connect(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// startService runs a Service until the test ends.
func startService(t *testing.T, js jetstream.JetStream, a *Applier, obs ...Observer) {
	t.Helper()
	cfg := DefaultServiceConfig()
	cfg.RetryMin, cfg.RetryMax = 20*time.Millisecond, 100*time.Millisecond
	svc, err := NewService(cfg, ServiceDeps{JetStream: js, Applier: a, Observers: obs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	testenv.RunStage(t, "service", svc.Run)
}

func TestServiceAppliesThroughTheEmitter(t *testing.T) {
	ns := testenv.NATS(t)
	st := teststore.New(t)
	now := time.Now().UTC()
	insert(t, st,
		priced("acme", "e1", event.KindAITokens, now.Add(-time.Hour), 1000, "0.001", false),
		priced("acme", "e2", event.KindAITokens, now.Add(-time.Hour), 1000, "0.001", false),
		priced("globex", "g1", event.KindAITokens, now.Add(-time.Hour), 1000, "0.001", false))
	a, err := NewApplier(DefaultConfig(), st)
	if err != nil {
		t.Fatal(err)
	}
	obs := &effects{}
	js := connect(t, ns.URL)
	startService(t, js, a, obs)

	// A service's emitter corrects its events.
	nc := testenv.Connect(t, ns.URL)
	em, err := emit.New(nc, emit.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer em.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := em.Correct(ctx,
		event.Correction{TenantID: "acme", EventID: "e1", Action: event.ActionVoid, Reason: "double-counted", By: "invoices-api"},
		event.Correction{TenantID: "acme", EventID: "e2", Action: event.ActionAmend, Quantity: qty(400), Reason: "bug 17", By: "invoices-api"},
		event.Correction{TenantID: "acme", EventID: "e1", Action: event.ActionVoid, Reason: "again", By: "invoices-api"},
		event.Correction{TenantID: "globex", EventID: "e2", Action: event.ActionVoid, Reason: "wrong tenant", By: "invoices-api"},
	)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range res {
		got = append(got, r.EventID+":"+r.Status+":"+string(r.Reason))
	}
	want := "e1:applied: e2:applied: e1:refused:already_voided e2:refused:unknown_event"
	if strings.Join(got, " ") != want {
		t.Fatalf("results: got %s, want %s", strings.Join(got, " "), want)
	}
	if res[0].ID == "" || res[0].ID == res[1].ID {
		t.Fatalf("correction ids were not filled: %+v", res)
	}
	eff := obs.list()
	if len(eff) != 2 || eff[0].Count != -1 || eff[0].Cost != -1 || eff[1].Quantity != -600 || eff[1].Cost != -0.6 {
		t.Fatalf("observed effects: %+v", eff)
	}
	if g := usageTotals(t, st, "acme"); g.Count != 1 || g.Quantity != 400 || g.Cost != "0.400000000" {
		t.Fatalf("usage_1m of acme: %+v", g)
	}

	// Sending the same corrections again (same ids) changes nothing.
	again := []event.Correction{{ID: res[0].ID, TenantID: "acme", EventID: "e1", Action: event.ActionVoid, Reason: "double-counted", By: "invoices-api"}}
	res2, err := emit.Correct(ctx, js, again...)
	if err != nil || res2[0].Status != event.CorrectionDuplicate {
		t.Fatalf("resend: got %+v %v, want duplicate", res2, err)
	}
	if len(obs.list()) != 2 {
		t.Fatalf("a duplicate was observed: %+v", obs.list())
	}

	// A malformed request is answered with an error and changes nothing.
	inbox := nats.NewInbox()
	sub, _ := js.Conn().SubscribeSync(inbox)
	m := nats.NewMsg(event.CorrectionSubject("acme"))
	m.Data = []byte(`{"corrections": 12}`)
	m.Header.Set(event.HeaderReply, inbox)
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	r, err := sub.NextMsg(10 * time.Second)
	if err != nil || !strings.Contains(string(r.Data), "not a JSON correction request") {
		t.Fatalf("malformed request reply: %v %s", err, r.Data)
	}

	// A reply subject outside _INBOX. is not used: the daemon must not
	// publish with its rights into a stream (here: another tenant's usage)
	// or the JetStream API. The correction itself is applied.
	usage, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: event.UsageStream, Subjects: []string{event.UsageSubjects}})
	if err != nil {
		t.Fatal(err)
	}
	m = nats.NewMsg(event.CorrectionSubject("acme"))
	m.Data = []byte(`{"corrections":[{"id":"evil-1","tenant_id":"acme","event_id":"e2","action":"void","reason":"r","by":"b"}]}`)
	m.Header.Set(event.HeaderReply, event.Subject("globex", event.KindAITokens))
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); usageTotals(t, st, "acme").Count != 0; {
		if time.Now().After(deadline) {
			t.Fatal("the correction with a foreign reply subject was not applied")
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if info, err := usage.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Fatalf("the daemon published a reply into the usage stream: %+v %v", info.State, err)
	}
}

func TestEmitterCorrectWithoutDaemon(t *testing.T) {
	ns := testenv.NATS(t)
	js := connect(t, ns.URL)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c := event.Correction{TenantID: "acme", EventID: "e1", Action: event.ActionVoid, Reason: "r", By: "b"}
	if _, err := emit.Correct(ctx, js, c); err == nil || !strings.Contains(err.Error(), "tenantguard run") {
		t.Fatalf("without the stream: got %v, want an error naming tenantguard run", err)
	}
	if err := EnsureStream(ctx, js, DefaultServiceConfig()); err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if _, err := emit.Correct(short, js, c); !errors.Is(err, emit.ErrNotConfirmed) {
		t.Fatalf("stream without daemon: got %v, want ErrNotConfirmed", err)
	}
	// The queued request is applied once a daemon runs.
	st := teststore.New(t)
	insert(t, st, priced("acme", "e1", event.KindAPIRequest, time.Now().Add(-time.Minute), 1, "0.5", false))
	a, _ := NewApplier(DefaultConfig(), st)
	startService(t, js, a)
	deadline := time.Now().Add(20 * time.Second)
	for usageTotals(t, st, "acme").Count != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the queued correction was not applied")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Missing fields fail at the caller.
	if _, err := emit.Correct(ctx, js, event.Correction{TenantID: "acme", EventID: "e1", Action: event.ActionVoid}); err == nil ||
		!strings.Contains(err.Error(), "reason") {
		t.Fatalf("no reason: got %v", err)
	}
}
