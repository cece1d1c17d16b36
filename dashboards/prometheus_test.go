package dashboards

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/pgstat"
	"github.com/tenantguard/tenantguard/exporter/metrics"
	"github.com/tenantguard/tenantguard/internal/testenv"
)

// drillTenant is the tenant the drill-down's $tenant expands to.
const drillTenant = "acme"

// promVars are what Grafana would substitute, sized for a 1s scrape.
var promVars = map[string]string{
	"tenant":          drillTenant,
	"topk":            "10",
	"__rate_interval": "10s",
	"__interval":      "2s",
	"__interval_ms":   "2000",
	"__range":         "5m",
	"__range_s":       "300",
}

func expandProm(t *testing.T, q string) string {
	t.Helper()
	return expandVars(t, q, promVars)
}

// selfMetrics mirrors the collector's self-metrics (collector/metrics.go):
// same names, types and labels, registered on the test registry.
type selfMetrics struct {
	events, dlq                *prometheus.CounterVec
	batchRows, insertDur       prometheus.Histogram
	insertErrors, redeliveries prometheus.Counter
	lag, pending               prometheus.Gauge
}

func newSelfMetrics(reg prometheus.Registerer) *selfMetrics {
	s := &selfMetrics{
		events:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tenantguard_collector_events_total", Help: "h"}, []string{"result"}),
		dlq:          prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tenantguard_collector_dlq_total", Help: "h"}, []string{"reason"}),
		batchRows:    prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tenantguard_collector_batch_rows", Help: "h", Buckets: prometheus.ExponentialBuckets(1, 4, 10)}),
		insertDur:    prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tenantguard_collector_insert_duration_seconds", Help: "h", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		insertErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "tenantguard_collector_insert_errors_total", Help: "h"}),
		redeliveries: prometheus.NewCounter(prometheus.CounterOpts{Name: "tenantguard_collector_redeliveries_total", Help: "h"}),
		lag:          prometheus.NewGauge(prometheus.GaugeOpts{Name: "tenantguard_collector_lag_seconds", Help: "h"}),
		pending:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "tenantguard_collector_pending_messages", Help: "h"}),
	}
	reg.MustRegister(s.events, s.dlq, s.batchRows, s.insertDur, s.insertErrors, s.redeliveries, s.lag, s.pending)
	return s
}

// traffic feeds the exporter and the self-metrics like a running daemon:
// eight tenants (acme noisy) with a top-K of 5, so the overflow is live.
func traffic(ctx context.Context, m *metrics.Metrics, s *selfMetrics) {
	tenants := []string{"acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka"}
	kinds := []string{event.KindAPIRequest, event.KindAITokens, event.KindDBQuery}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		for i, tn := range tenants {
			reps := 1
			if tn == "acme" {
				reps = 20
			}
			for r := 0; r < reps; r++ {
				k := kinds[(n+r+i)%len(kinds)]
				e := &event.Event{ID: "x", TenantID: tn, Kind: k, Quantity: float64(1 + r%5),
					LatencyMs: float64(5 + (n*7+r*13+i*31)%400), Error: (n+r+i)%10 == 0}
				m.Observe(e, 0.0002*e.Quantity)
				s.events.WithLabelValues("stored").Inc()
			}
		}
		s.events.WithLabelValues("duplicate").Inc()
		if n%5 == 0 {
			s.events.WithLabelValues("dlq").Inc()
			s.dlq.WithLabelValues("invalid_tenant").Inc()
		}
		s.batchRows.Observe(float64(27 + n%50))
		s.insertDur.Observe(0.002 + float64(n%10)/1000)
		s.lag.Set(0.3)
		s.pending.Set(float64(n % 40))
		if n%20 == 0 {
			s.redeliveries.Inc()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// TestPrometheusPanels serves the exporter behind a real Prometheus with
// the project's rule files and runs every Prometheus expression of every
// dashboard (panels and variables), requiring a non-empty result.
func TestPrometheusPanels(t *testing.T) {
	var qs []query
	for _, d := range loadDashboards(t) {
		for _, q := range d.queries(t) {
			if q.ds == promUID {
				qs = append(qs, q)
			}
		}
	}
	if len(qs) < 30 {
		t.Fatalf("only %d Prometheus queries found", len(qs))
	}
	checkSelfMetricNames(t, qs)

	reg := prometheus.NewRegistry()
	cfg := metrics.DefaultConfig()
	cfg.MaxTenantSeries = 5
	m, err := metrics.New(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s := newSelfMetrics(reg)
	// The setters and sources the daemon calls: its alert view, its
	// decisions trail and the price book.
	m.SetActiveAnomalies("acme", 2)
	m.SetThrottled("acme", true)
	m.SetSpendCapSource(func(tenant string) (float64, bool) { return 500, tenant == "acme" })

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); traffic(ctx, m, s) }()
	// tenantguard_pg_findings comes from the Postgres auditor itself,
	// pulling a real pg_stat_statements on the test registry.
	pg := pgAuditor(t, reg)
	go func() { defer wg.Done(); _ = pg.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()
	// The guard's decisions and alert delivery.
	startGuard(ctx, t, reg)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	rules, _ := filepath.Glob("../configs/rules/*.yml")
	for i, r := range rules {
		if rules[i], err = filepath.Abs(r); err != nil {
			t.Fatal(err)
		}
	}
	// A service embedding the SDK is scraped too, as configs/prometheus.yml does.
	prom := testenv.StartPrometheus(t, testenv.PrometheusConfig{Targets: []string{ln.Addr().String(), startSDKService(t)}, RuleFiles: rules})

	// Poll until every expression returns data, or the deadline passes.
	pending := map[string]query{}
	for _, q := range qs {
		pending[q.where] = q
	}
	deadline := time.Now().Add(90 * time.Second)
	var lastErr = map[string]string{}
	for len(pending) > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Second)
		for k, q := range pending {
			expr := expandProm(t, q.text)
			if strings.Contains(q.where, "/ variable ") {
				expr = labelValuesSelector(t, expr)
			}
			n, err := promQuery(prom.URL, expr)
			if err != nil {
				lastErr[k] = err.Error()
				continue
			}
			if n > 0 {
				// Grafana runs range queries too; they must not fail.
				if err := promRangeQuery(prom.URL, expr); err != nil {
					lastErr[k] = "range: " + err.Error()
					continue
				}
				delete(pending, k)
			} else {
				lastErr[k] = "empty result"
			}
		}
	}
	var bad []string
	for k, q := range pending {
		bad = append(bad, fmt.Sprintf("%s: %s\n    %s", k, lastErr[k], expandProm(t, q.text)))
	}
	sort.Strings(bad)
	for _, b := range bad {
		t.Error(b)
	}
	t.Logf("%d Prometheus expressions returned data", len(qs)-len(bad))
}

var labelValuesRE = regexp.MustCompile(`^label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)$`)

// labelValuesSelector turns Grafana's label_values(selector, label) into
// the series query Grafana runs for it.
func labelValuesSelector(t *testing.T, q string) string {
	m := labelValuesRE.FindStringSubmatch(strings.TrimSpace(q))
	if m == nil {
		t.Fatalf("variable query %q is not label_values(selector, label)", q)
	}
	return fmt.Sprintf("count by (%s) (%s)", m[2], m[1])
}

type promResp struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		ResultType string            `json:"resultType"`
		Result     []json.RawMessage `json:"result"`
	} `json:"data"`
}

func promGet(u string) (*promResp, error) {
	resp, err := http.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r promResp
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("decode: %w (HTTP %d)", err, resp.StatusCode)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s", r.Error)
	}
	return &r, nil
}

// promQuery runs an instant query and returns the number of results.
func promQuery(base, expr string) (int, error) {
	r, err := promGet(base + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		return 0, err
	}
	if r.Data.ResultType == "scalar" {
		return 1, nil
	}
	return len(r.Data.Result), nil
}

func promRangeQuery(base, expr string) error {
	end := time.Now()
	v := url.Values{"query": {expr}, "start": {fmt.Sprint(end.Add(-time.Minute).Unix())},
		"end": {fmt.Sprint(end.Unix())}, "step": {"2"}}
	_, err := promGet(base + "/api/v1/query_range?" + v.Encode())
	return err
}

// metricNameRE matches a tenantguard series name, recording rules'
// level:name:operation form included.
var metricNameRE = regexp.MustCompile(`[a-z_]*:?tenantguard_[a-z0-9_]+(:[a-z0-9_]+)?`)

// checkSelfMetricNames guards against drift: every tenantguard_* series a
// dashboard uses must be named in the project's Go sources (tests
// excluded; the emitter builds its names from a prefix and lists each in
// its doc), or be recorded by a rule in configs/rules, so a misspelt name
// cannot hide behind an "or vector(0)".
func checkSelfMetricNames(t *testing.T, qs []query) {
	t.Helper()
	var src strings.Builder
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != ".." && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			src.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("read the Go sources: %v", err)
	}
	var rules strings.Builder
	files, _ := filepath.Glob("../configs/rules/*.yml")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rules.Write(b)
	}
	for _, q := range qs {
		for _, name := range metricNameRE.FindAllString(q.text, -1) {
			if strings.Contains(name, ":") {
				if !regexp.MustCompile(`(?m)record:\s*` + regexp.QuoteMeta(name) + `\s*$`).MatchString(rules.String()) {
					t.Errorf("%s uses %s, which no rule in configs/rules records", q.where, name)
				}
				continue
			}
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
			if !regexp.MustCompile(`\b` + base + `\b`).MatchString(src.String()) {
				t.Errorf("%s uses %s, which no Go source names", q.where, name)
			}
		}
	}
}

// pgAuditor returns a pgstat stage on reg, pulling every second from a real
// Postgres whose pg_stat_statements holds an unscoped and a multi-tenant
// statement on a tenant table.
func pgAuditor(t *testing.T, reg prometheus.Registerer) *pgstat.Stage {
	t.Helper()
	_, dsn := testenv.Postgres(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		"CREATE TABLE invoices (id serial PRIMARY KEY, tenant_id text NOT NULL, amount int)",
		"INSERT INTO invoices (tenant_id, amount) VALUES ('acme', 1), ('globex', 2)",
		"SELECT sum(amount) FROM invoices",
		"SELECT * FROM invoices WHERE tenant_id IN ('acme', 'globex')",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	cfg := pgstat.DefaultConfig()
	cfg.DSNs, cfg.Interval = []string{dsn}, time.Second
	st, err := pgstat.New(cfg, pgstat.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
