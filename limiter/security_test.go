package limiter

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

// securityDocConf returns the nats-server configuration of docs/security.md,
// between its begin and end markers.
func securityDocConf(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "<!-- nats-server.conf begin -->\n```conf\n")
	conf, _, ok2 := strings.Cut(rest, "```\n<!-- nats-server.conf end -->")
	if !ok || !ok2 {
		t.Fatal("docs/security.md lacks the nats-server.conf block between its markers")
	}
	return conf
}

// TestNATSPermissionsFromSecurityDoc starts NATS with the accounts and
// permissions docs/security.md shows, and checks what each user can do: a
// service publishes usage and its limiter applies a signed decision, but
// the server refuses its attempts to write, delete or purge a decision; the
// operator writes decisions but cannot publish usage; the daemon writes.
func TestNATSPermissionsFromSecurityDoc(t *testing.T) {
	for user, pw := range map[string]string{"DAEMON": "d-secret", "OPERATOR": "o-secret", "SERVICE": "s-secret"} {
		t.Setenv("TG_"+user+"_PASSWORD", pw)
	}
	srv := testenv.NATS(t, testenv.NATSConfig(securityDocConf(t)))
	// violations receives the permission violations the server reports to
	// each connection.
	violations := map[string]chan string{}
	as := func(user, pw string) *nats.Conn {
		t.Helper()
		v := make(chan string, 64)
		violations[user] = v
		nc, err := nats.Connect(srv.URL, nats.UserInfo(user, pw), nats.MaxReconnects(-1),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
				if errors.Is(err, nats.ErrPermissionViolation) {
					select {
					case v <- err.Error():
					default:
					}
				}
			}))
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	// refused checks that the server refused what user just tried, naming
	// a subject that contains want.
	refused := func(user, what, want string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s %s: the server accepted it", user, what)
			return
		}
		select {
		case v := <-violations[user]:
			if !strings.Contains(v, "Permissions Violation for Publish to") || !strings.Contains(v, want) {
				t.Errorf("%s %s: %v; the server reported %q, want a publish violation on %s", user, what, err, v, want)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("%s %s: %v, and no permissions violation from the server", user, what, err)
		}
	}
	if _, err := nats.Connect(srv.URL, nats.UserInfo("tenantguard-service", "wrong")); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	ctx := context.Background()
	signer := testSigner(t, 1)

	// The daemon creates the usage stream and the buckets, and writes.
	daemon := as("tenantguard-daemon", "d-secret")
	djs, err := jetstream.New(daemon)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := djs.CreateStream(ctx, jetstream.StreamConfig{Name: event.UsageStream, Subjects: []string{event.UsageSubjects}}); err != nil {
		t.Fatalf("daemon creates %s: %v", event.UsageStream, err)
	}
	if _, err := EnsureBuckets(ctx, djs, 1, 0); err != nil {
		t.Fatalf("daemon creates the buckets: %v", err)
	}
	pub, err := NewPublisher(ctx, daemon, WithSigner(signer))
	if err != nil {
		t.Fatalf("daemon opens the decisions bucket: %v", err)
	}
	if _, err := pub.Put(ctx, throttle("acme", 5, 5, SourceAnomaly, time.Minute)); err != nil {
		t.Fatalf("daemon writes a decision: %v", err)
	}

	// A service publishes usage and applies the signed decision.
	svc := as("tenantguard-service", "s-secret")
	em, err := emit.New(svc, emit.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := em.Emit(ctx, event.Event{TenantID: "acme", Kind: "api_request", Time: time.Now(), Quantity: 1}); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = em.Close(cctx)
	cancel()
	if err != nil || em.Stats().Published != 1 {
		t.Fatalf("service emits: %v, stats %+v; want 1 published", err, em.Stats())
	}
	cfg := DefaultConfig()
	cfg.Group = "svc"
	cfg.TrustedKeys = []string{FormatPublicKey(signer.PublicKey())}
	lim, err := New(cfg, Deps{Conn: svc})
	if err != nil {
		t.Fatal(err)
	}
	lctx, lcancel := context.WithCancel(ctx)
	ldone := make(chan struct{})
	go func() { defer close(ldone); lim.Run(lctx) }()
	t.Cleanup(func() { lcancel(); <-ldone })
	testenv.Eventually(t, 5*time.Second, "the service's limiter applies the daemon's throttle", func() bool { r, _, ok := lim.Limit("acme"); return ok && r == 5 })
	testenv.Eventually(t, 5*time.Second, "the service heartbeats its presence", func() bool { return presenceKeys(t, djs) == 1 })

	// The server refuses the service's writes to the decisions bucket.
	sjs, err := jetstream.New(svc)
	if err != nil {
		t.Fatal(err)
	}
	skv, err := sjs.KeyValue(ctx, event.DecisionsBucket)
	if err != nil {
		t.Fatalf("service opens the decisions bucket to read: %v", err)
	}
	forged := marshal(t, throttle("acme", 0, 0, SourceManual, time.Hour))
	for name, write := range map[string]func(context.Context) error{
		"put":    func(ctx context.Context) error { _, err := skv.Put(ctx, "acme", forged); return err },
		"create": func(ctx context.Context) error { _, err := skv.Create(ctx, "victim", forged); return err },
		"delete": func(ctx context.Context) error { return skv.Delete(ctx, "acme") },
		"purge":  func(ctx context.Context) error { return skv.Purge(ctx, "acme") },
		"purge the stream": func(ctx context.Context) error {
			s, err := sjs.Stream(ctx, "KV_"+event.DecisionsBucket)
			if err != nil {
				return err
			}
			return s.Purge(ctx)
		},
		"delete the bucket": func(ctx context.Context) error { return sjs.DeleteKeyValue(ctx, event.DecisionsBucket) },
	} {
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		err := write(wctx)
		cancel()
		refused("tenantguard-service", name, "tenantguard_decisions", err)
	}
	if d, err := pub.Get(ctx, "acme", ScopeAll); err != nil || d.RatePerSec != 5 {
		t.Fatalf("acme after the service's attempts: %+v, %v; want the daemon's throttle", d, err)
	}
	if _, err := pub.Get(ctx, "victim", ScopeAll); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("victim after the service's attempts: %v, want no decision", err)
	}

	// The operator writes decisions, and cannot publish usage.
	op := as("tenantguard-operator", "o-secret")
	opub, err := NewPublisher(ctx, op, WithSigner(signer))
	if err != nil {
		t.Fatalf("operator opens the decisions bucket: %v", err)
	}
	if _, err := opub.Put(ctx, throttle("acme", 2, 2, SourceManual, time.Hour)); err != nil {
		t.Fatalf("operator throttles: %v", err)
	}
	testenv.Eventually(t, 5*time.Second, "the operator's throttle applied", func() bool { r, _, ok := lim.Limit("acme"); return ok && r == 2 })
	if ds, err := opub.List(ctx, false); err != nil || len(ds) != 1 {
		t.Fatalf("operator lists decisions: %+v, %v", ds, err)
	}
	if err := opub.Clear(ctx, "acme", ScopeAll, SourceManual); err != nil {
		t.Fatalf("operator releases: %v", err)
	}
	testenv.Eventually(t, 5*time.Second, "the operator's release applied", func() bool { _, _, ok := lim.Limit("acme"); return !ok })
	ojs, err := jetstream.New(op)
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err = ojs.Publish(pctx, event.Subject("acme", "api_request"), []byte(`{}`))
	cancel()
	refused("tenantguard-operator", "publishes usage", "tenantguard.usage.acme.api_request", err)
	for user, v := range violations {
		select {
		case msg := <-v:
			t.Errorf("%s: unexpected %s", user, msg)
		default:
		}
	}
}

func presenceKeys(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), event.LimitersBucket)
	if err != nil {
		return 0
	}
	keys, err := kv.Keys(context.Background())
	if err != nil {
		return 0
	}
	return len(keys)
}
