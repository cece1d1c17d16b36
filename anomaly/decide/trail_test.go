package decide

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
	"github.com/tenantguard/tenantguard/limiter"
)

// auditRow is one row of the decisions table, as the trail writes it.
type auditRow struct {
	Tenant, Scope, Action, Source, Reason, Key, Op, KeyID, Reject, Raw string
	Revision                                                           uint64
	Verified                                                           uint8
	Expires                                                            time.Time
}

func readAudit(t *testing.T, st *store.Store) []auditRow {
	t.Helper()
	rows, err := st.Conn().Query(context.Background(), `SELECT tenant_id, scope, action, source, reason, kv_key, kv_op,
	key_id, reject_reason, raw, kv_revision, verified, expires_at FROM `+st.Database()+`.decisions ORDER BY kv_revision`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var r auditRow
		if err := rows.Scan(&r.Tenant, &r.Scope, &r.Action, &r.Source, &r.Reason, &r.Key, &r.Op, &r.KeyID, &r.Reject,
			&r.Raw, &r.Revision, &r.Verified, &r.Expires); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTrailRecordsEveryRevisionOnce: the forged decision, put
// straight into the bucket, is ignored by limiters (their rejected counter
// moves) and shows in the audit table as unverified, beside the signed
// decisions, the deletes and the clears: every revision exactly once,
// across a restart of the trail.
func TestTrailRecordsEveryRevisionOnce(t *testing.T) {
	ctx := context.Background()
	ns, nc, pub, st := servers(t)
	rec := NewClickHouseRecorder(st)
	// A service's limiter, trusting the writers' key.
	lim := serviceLimiter(t, ns.URL)

	reg := prometheus.NewPedanticRegistry()
	startTrail := func(reg prometheus.Registerer) func() {
		tr, err := NewTrail(DefaultConfig(), TrailDeps{Conn: nc, Recorder: rec, Verifier: pub.Verifier(), Registerer: reg,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		tctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- tr.Run(tctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Trail.Run: %v", err)
			}
		}
	}
	stop := startTrail(reg)

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, limiter.DecisionsBucketConfig().Bucket)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	manual := limiter.Decision{TenantID: "acme", Scope: limiter.ScopeAll, Action: limiter.ActionThrottle,
		RatePerSec: 5, Burst: 5, IssuedAt: now, ExpiresAt: now.Add(time.Hour), Reason: "incident 7", Source: limiter.SourceManual}
	var revs []uint64
	mustRev := func(rev uint64, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, rev)
	}
	mustRev(pub.Put(ctx, manual))
	testenv.Eventually(t, 20*time.Second, "the limiter applies the signed throttle", func() bool { r, _, ok := lim.Limit("acme"); return ok && r == 5 })
	const forged = `{"action":"shed","source":"manual","expires_at":"2105-01-01T00:00:00Z"}`
	mustRev(kv.Put(ctx, "victim", []byte(forged)))
	full := `{"tenant_id":"acme","scope":"all","action":"shed","rate_per_sec":0,"burst":0,"issued_at":"` +
		now.Format(time.RFC3339) + `","expires_at":"2105-01-01T00:00:00Z","reason":"x","source":"manual","anomaly_id":""}`
	mustRev(kv.Put(ctx, "acme", []byte(full)))
	testenv.Eventually(t, 20*time.Second, "the limiter rejects both", func() bool { return lim.Rejected(limiter.RejectUnsigned) == 2 })
	if _, _, ok := lim.Limit("victim"); ok {
		t.Fatal("the limiter applied the forged shed of victim")
	}
	if r, _, ok := lim.Limit("acme"); !ok || r != 5 {
		t.Fatalf("acme: %v, %v; want the signed 5/s throttle kept over the forged shed", r, ok)
	}
	if err := kv.Delete(ctx, "victim"); err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	revs = append(revs, e.Revision()+1) // the delete of victim came after the forged shed of acme
	if err := pub.Clear(ctx, "acme", limiter.ScopeAll, limiter.SourceManual); err != nil {
		t.Fatal(err)
	}
	e, err = kv.Get(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	revs = append(revs, e.Revision())
	testenv.Eventually(t, 20*time.Second, "5 revisions recorded", func() bool { return len(readAudit(t, st)) == 5 })
	stop()

	// A restart resumes after the last recorded revision.
	stop = startTrail(nil)
	mustRev(pub.Put(ctx, manual))
	testenv.Eventually(t, 20*time.Second, "the revision after the restart recorded", func() bool { return len(readAudit(t, st)) == 6 })
	time.Sleep(500 * time.Millisecond)
	stop()

	rows := readAudit(t, st)
	var got []uint64
	for _, r := range rows {
		got = append(got, r.Revision)
	}
	sort.Slice(revs, func(i, j int) bool { return revs[i] < revs[j] })
	if fmt.Sprint(got) != fmt.Sprint(revs) {
		t.Fatalf("recorded revisions %v, want each of %v once", got, revs)
	}
	want := []struct {
		key, tenant, action, op, reject string
		verified                        uint8
	}{
		{"acme", "acme", "throttle", "put", "", 1},
		{"victim", "victim", "shed", "put", "unsigned", 0},
		{"acme", "acme", "shed", "put", "unsigned", 0},
		{"victim", "victim", "", "delete", "", 0},
		{"acme", "acme", "clear", "put", "", 1},
		{"acme", "acme", "throttle", "put", "", 1},
	}
	for i, w := range want {
		r := rows[i]
		if r.Key != w.key || r.Tenant != w.tenant || r.Action != w.action || r.Op != w.op || r.Reject != w.reject || r.Verified != w.verified {
			t.Errorf("row %d: got key %s tenant %s action %q op %s reject %q verified %d, want %+v",
				i, r.Key, r.Tenant, r.Action, r.Op, r.Reject, r.Verified, w)
		}
	}
	if r := rows[1]; r.Raw != forged || !r.Expires.Equal(time.Date(2105, 1, 1, 0, 0, 0, 0, time.UTC)) || r.Source != "manual" {
		t.Errorf("forged row: raw %q expires %s source %s; want the stored value, 2105-01-01 and manual", r.Raw, r.Expires, r.Source)
	}
	if r := rows[0]; r.KeyID != testSigner(t).KeyID() || r.Raw != "" || r.Reason != "incident 7" {
		t.Errorf("signed row: key_id %q raw %q reason %q; want the signer's key id, no raw, the reason", r.KeyID, r.Raw, r.Reason)
	}
	if got := testenv.MetricValue(t, reg, "tenantguard_decisions_unverified_total", "reason", "unsigned"); got != 2 {
		t.Errorf("tenantguard_decisions_unverified_total{reason=unsigned} = %v, want 2", got)
	}
}

// TestRecorderClampsTimes: a value from the bucket can hold any time; the
// audit row never wraps one (a DateTime past 2106 used to come back as
// 2046), and keeps the exact value in raw.
func TestRecorderClampsTimes(t *testing.T) {
	ctx := context.Background()
	srv, db := testenv.ClickHouse(t)
	st := teststore.On(t, srv, db)
	rec := NewClickHouseRecorder(st)
	d := limiter.Decision{TenantID: "acme", Scope: "all", Action: "shed", Source: "manual",
		IssuedAt: time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), ExpiresAt: time.Now().Add(2562047 * time.Hour)}
	raw, _ := json.Marshal(d)
	if err := rec.Record(ctx, []Record{{Key: "acme", Revision: 9, Op: OpPut, At: time.Now(), Decision: d, Reject: "invalid", Raw: raw}}); err != nil {
		t.Fatal(err)
	}
	rows := readAudit(t, st)
	if len(rows) != 1 || !rows[0].Expires.Equal(limiter.MaxTimestamp) || !strings.Contains(rows[0].Raw, `"expires_at":"23`) {
		t.Fatalf("got %+v, want expires_at clamped to %s and the 2319 date in raw", rows, limiter.MaxTimestamp)
	}
}
