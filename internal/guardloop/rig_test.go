package guardloop

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
	"github.com/tenantguard/tenantguard/limiter"
)

// rig is one guard loop: NATS, ClickHouse with seeded history, the daemon
// and the service as separate processes, and a watch on the decisions KV.
type rig struct {
	nats    *testenv.NATSServer
	ch      *testenv.ClickHouseServer
	db      string
	bin     string
	env     []string // the daemon's TENANTGUARD_* settings
	daemon  *testenv.Proc
	service *service
	kv      *kvLog
}

// newRig seeds history, then starts the daemon with env defaults plus
// overrides (TENANTGUARD_* name -> value), the decisions watch and the
// service.
func newRig(t *testing.T, overrides map[string]string) *rig {
	t.Helper()
	began := time.Now()
	r := &rig{nats: testenv.NATS(t)}
	r.ch, r.db = testenv.ClickHouse(t)
	// GUARDLOOP_BIN measures a prebuilt tenantguard (e.g. another commit's)
	// instead of the one built from this tree.
	if r.bin = os.Getenv("GUARDLOOP_BIN"); r.bin == "" {
		r.bin = testenv.Binary(t)
	}

	seedAt := time.Now()
	from, to, n := seedHistory(t, r.ch, r.db, seedAt)
	t.Logf("seeded %d past requests of %d tenants, %s to %s, in %s", n, numTenants, from.Format("15:04"), to.Format("15:04"), time.Since(seedAt).Round(time.Second))

	// The daemon signs decisions with a fresh key; the service trusts it.
	keyPEM, pubKey, err := limiter.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "decisions.key")
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{
		"TENANTGUARD_DECISIONS_SIGNING_KEY_FILE": keyFile,
		"TENANTGUARD_NATS_URL":                   r.nats.URL,
		"TENANTGUARD_CLICKHOUSE_ADDR":            r.ch.Addr,
		"TENANTGUARD_CLICKHOUSE_DATABASE":        r.db,
		"TENANTGUARD_METRICS_LISTEN":             "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)),
		"TENANTGUARD_API_LISTEN":                 "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t)),
		"TENANTGUARD_LOG_LEVEL":                  "warn",
	}
	for k, v := range overrides {
		vars[k] = v
	}
	for k, v := range vars {
		r.env = append(r.env, k+"="+v)
	}
	sort.Strings(r.env)
	t.Cleanup(func() { // runs after the daemon stopped (cleanups run last-in first-out)
		if r.daemon != nil && !t.Failed() {
			if lines := r.daemon.Grep("level=WARN", "level=ERROR"); len(lines) > 0 {
				t.Logf("daemon logged %d warnings or errors, first ones:\n%s", len(lines), strings.Join(lines[:min(len(lines), 10)], "\n"))
			}
		}
	})
	r.daemon = testenv.StartProc(t, "daemon", exec.Command(r.bin, "run"), r.env...)
	r.daemon.WaitHTTP200(t, "http://"+vars["TENANTGUARD_API_LISTEN"]+"/readyz", 2*time.Minute)
	r.kv = watchDecisions(t, r.nats.URL)
	r.service = startService(t, r.nats.URL, pubKey)
	t.Logf("servers up, daemon ready and service started %s after the test began", time.Since(began).Round(time.Second))
	return r
}

// seedHistory writes the tenants' requests from the start of the hour
// three hours ago (what the daemon's warm start replays by default) to the
// end of the current minute, as the collector would have stored them: the
// usage_1m view rolls them up.
func seedHistory(t *testing.T, ch *testenv.ClickHouseServer, db string, now time.Time) (from, to time.Time, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st := teststore.On(t, ch, db)
	from = now.Add(-3 * time.Hour).Truncate(time.Hour)
	to = now.Truncate(time.Minute).Add(time.Minute)
	rng := rand.New(rand.NewPCG(7, 11))
	const chunk = 50000
	rows := make([]store.Row, 0, chunk)
	evs := make([]event.Event, chunk)
	flush := func() {
		if err := st.InsertEvents(ctx, rows, now); err != nil {
			t.Fatal(err)
		}
		n += len(rows)
		rows = rows[:0]
	}
	for _, tl := range tenants() {
		at, k := from, 0
		for {
			at = at.Add(time.Duration(rng.ExpFloat64() / tl.Rate * float64(time.Second)))
			if !at.Before(to) {
				break
			}
			e := &evs[len(rows)]
			request(e, rng, tl.ID, randomUser(rng), at)
			k++
			e.ID = fmt.Sprintf("seed-%s-%d", tl.ID, k)
			rows = append(rows, store.Row{Event: e, Plan: "default", PriceVersion: "default"})
			if len(rows) == chunk {
				flush()
			}
		}
	}
	flush()
	return from, to, n
}

// service is the running service child and everything it reported.
type service struct {
	*testenv.Proc
	stdin   io.WriteCloser
	mu      sync.Mutex
	reports []report // periodic reports
	acks    []report
	readErr error
}

func startService(t *testing.T, natsURL, trustedKey string) *service {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	// An os.Pipe rather than StdoutPipe: Wait (in StartProc) must not close
	// the reading end while the reader below is still on it.
	stdout, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = pw
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &service{stdin: stdin}
	s.Proc = testenv.StartProc(t, "service", cmd, serviceEnv+"=1", serviceNATSEnv+"="+natsURL, serviceSeedEnv+"=42", serviceKeyEnv+"="+trustedKey)
	pw.Close()
	t.Cleanup(func() { stdout.Close() })
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var r report
			err := json.Unmarshal(sc.Bytes(), &r)
			s.mu.Lock()
			switch {
			case err != nil:
				s.readErr = fmt.Errorf("service wrote %q: %w", sc.Text(), err)
			case r.Ack != "":
				s.acks = append(s.acks, r)
			default:
				s.reports = append(s.reports, r)
			}
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = stdin.Close() })
	return s
}

// command sends a command and returns the time the service applied it.
func (s *service) command(t *testing.T, verb, tenant string, args ...string) time.Time {
	t.Helper()
	line := strings.Join(append([]string{verb, tenant}, args...), " ") + "\n"
	s.mu.Lock()
	seen := len(s.acks)
	s.mu.Unlock()
	if err := s.send(line); err != nil {
		t.Fatalf("service command %q: %v", line, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		for _, a := range s.acks[seen:] {
			if a.Ack == verb && a.Tenant == tenant {
				s.mu.Unlock()
				return time.UnixMilli(a.TimeMs)
			}
		}
		s.mu.Unlock()
		s.check(t)
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("service did not ack %q", line)
	return time.Time{}
}

// send writes one command line; safe for concurrent use.
func (s *service) send(line string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := io.WriteString(s.stdin, line)
	return err
}

// check fails t when the service died or wrote garbage.
func (s *service) check(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	err := s.readErr
	s.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if s.Exited() {
		t.Fatalf("service exited:\n%s", s.Tail())
	}
}

// snapshot returns the periodic reports so far.
func (s *service) snapshot() []report {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]report(nil), s.reports...)
}

// waitReport waits for a report for which ok is true and returns it.
func (s *service) waitReport(t *testing.T, timeout time.Duration, what string, ok func(report) bool) report {
	t.Helper()
	deadline := time.Now().Add(timeout)
	seen := 0
	for {
		rs := s.snapshot()
		for _, r := range rs[seen:] {
			if ok(r) {
				return r
			}
		}
		seen = len(rs)
		s.check(t)
		if time.Now().After(deadline) {
			t.Fatalf("%s: not seen after %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// reportAt waits for the first report at or after at.
func (s *service) reportAt(t *testing.T, at time.Time) report {
	t.Helper()
	ms := at.UnixMilli()
	return s.waitReport(t, time.Until(at)+10*time.Second, "report at "+at.Format(time.TimeOnly), func(r report) bool { return r.TimeMs >= ms })
}

// kvEntry is one change of the decisions bucket seen by the test.
type kvEntry struct {
	At       time.Time // when the test received it
	Key      string
	Tenant   string
	Delete   bool
	Decision limiter.Decision // zero for deletes
}

// kvLog records every change of tenantguard_decisions.
type kvLog struct {
	mu      sync.Mutex
	entries []kvEntry
	err     error
}

func watchDecisions(t *testing.T, url string) *kvLog {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name("guardloop-test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kv, err := js.KeyValue(ctx, event.DecisionsBucket) // the daemon created it before /readyz
	if err != nil {
		t.Fatalf("decisions bucket: %v", err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l := &kvLog{}
	go func() {
		defer w.Stop()
		for e := range w.Updates() {
			if e == nil {
				continue // end of the initial values
			}
			ent := kvEntry{At: time.Now(), Key: e.Key(), Delete: e.Operation() != jetstream.KeyValuePut}
			tenant, _, perr := limiter.ParseKey(e.Key())
			ent.Tenant = tenant
			if perr == nil && !ent.Delete {
				ent.Decision, perr = limiter.DecodeDecision(e.Value())
			}
			l.mu.Lock()
			if perr != nil && l.err == nil {
				l.err = fmt.Errorf("decision %s: %w", e.Key(), perr)
			}
			l.entries = append(l.entries, ent)
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *kvLog) snapshot() ([]kvEntry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]kvEntry(nil), l.entries...), l.err
}

// wait returns the first entry after since for which ok is true.
func (l *kvLog) wait(t *testing.T, s *service, since time.Time, timeout time.Duration, what string, ok func(kvEntry) bool) kvEntry {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		es, err := l.snapshot()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if !e.At.Before(since) && ok(e) {
				return e
			}
		}
		s.check(t)
		if time.Now().After(deadline) {
			t.Fatalf("%s: not seen in the decisions bucket after %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cliDecisions runs `tenantguard decisions --format json`.
func (r *rig) cliDecisions(t *testing.T) []limiter.Decision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, "decisions", "--format", "json")
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), r.env...) // r.env comes last: it wins
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tenantguard decisions: %v\n%s", err, stderr.String())
	}
	var ds []limiter.Decision
	if err := json.Unmarshal(out, &ds); err != nil {
		t.Fatalf("tenantguard decisions --format json wrote %q: %v", out, err)
	}
	return ds
}

// auditRow is one row of the ClickHouse decisions table.
type auditRow struct {
	Tenant, Action, Source string
	Rate                   float64
}

func (r *rig) audit(t *testing.T) []auditRow {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := r.ch.Conn(t, "default").Query(ctx, "SELECT tenant_id, action, source, rate_per_sec FROM "+r.db+".decisions WHERE kv_op = 'put' AND verified = 1 ORDER BY kv_revision")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var a auditRow
		if err := rows.Scan(&a.Tenant, &a.Action, &a.Source, &a.Rate); err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	return out
}

// untouched checks that no tenant outside spiked was ever rejected or
// limited in the service, or given a decision.
func (r *rig) untouched(t *testing.T, spiked map[string]bool) {
	t.Helper()
	for _, rep := range r.service.snapshot() {
		for tenant, n := range rep.Rejected {
			if n > 0 && !spiked[tenant] {
				t.Errorf("tenant %s: %d requests rejected by %s, want 0 (only %v spiked)", tenant, n, time.UnixMilli(rep.TimeMs).Format(time.TimeOnly), keys(spiked))
				spiked[tenant] = true // report each tenant once
			}
		}
		for tenant, lr := range rep.Limited {
			if !spiked[tenant] {
				t.Errorf("tenant %s: limited to %.3g/s in the service at %s, want unlimited", tenant, lr, time.UnixMilli(rep.TimeMs).Format(time.TimeOnly))
				spiked[tenant] = true
			}
		}
	}
	es, err := r.kv.snapshot()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if !spiked[e.Tenant] {
			t.Errorf("decisions bucket: key %s (%+v), want no decision for tenants that did not spike", e.Key, e.Decision)
			spiked[e.Tenant] = true
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// counts returns a tenant's cumulative allowed and rejected requests.
func counts(r report, tenant string) (allowed, rejected int64) {
	return r.Allowed[tenant], r.Rejected[tenant]
}
