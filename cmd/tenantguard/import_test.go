package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
)

// writeHistory writes n NDJSON events of two tenants inside [from, to).
func writeHistory(t *testing.T, path string, n int, from, to time.Time) {
	t.Helper()
	var buf []byte
	step := to.Sub(from) / time.Duration(n+1)
	for i := range n {
		e := event.Event{ID: fmt.Sprintf("h%05d", i), TenantID: []string{"acme", "globex"}[i%2],
			Kind: []string{event.KindAPIRequest, event.KindAITokens}[i%3%2], Time: from.Add(time.Duration(i+1) * step),
			Quantity: float64(1 + i%700), Route: "GET /x", LatencyMs: 3, Attrs: map[string]string{"k": fmt.Sprint(i % 3)}}
		buf = append(event.AppendJSON(buf, &e), '\n')
	}
	if err := os.WriteFile(path, buf, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestImportExportRoundTrip backs one tenant up and restores it: import
// history, correct two events, bill the closed period, export the tenant's
// events, delete the tenant, import the export, bill again. The billing
// export is byte for byte the same, and the other tenant never changed.
func TestImportExportRoundTrip(t *testing.T) {
	env := newCLIEnv(t)
	cfg := "pricing:\n  version: v7\n  prices:\n    api_request: \"0.001\"\n    ai_tokens: \"0.000002\"\n"
	if err := os.WriteFile("tenantguard.yaml", []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	to := time.Now().UTC().Truncate(time.Hour).Add(-time.Hour)
	from := to.Add(-24 * time.Hour)
	dir := t.TempDir()
	history := filepath.Join(dir, "history.ndjson")
	writeHistory(t, history, 3000, from, to)

	_, stderr, code := env.run(t, "", "import", "--input", history)
	if code != 0 || !strings.Contains(stderr, "read 3000, stored 3000, duplicates 0, rejected 0") {
		t.Fatalf("import: exit %d %s", code, stderr)
	}
	_, stderr, code = env.run(t, "", "import", "--input", history)
	if code != 0 || !strings.Contains(stderr, "read 3000, stored 0, duplicates 3000, rejected 0") {
		t.Fatalf("second import: exit %d %s", code, stderr)
	}
	if _, stderr, code := env.run(t, "", "correct", "--tenant", "acme", "--void", "--reason", "dispute", "--direct", "h00000"); code != 0 {
		t.Fatalf("void: %s", stderr)
	}
	if _, stderr, code := env.run(t, "", "correct", "--tenant", "acme", "--quantity", "50", "--reason", "bug", "--direct", "h00004"); code != 0 {
		t.Fatalf("amend: %s", stderr)
	}
	rng := []string{"--from", from.Format(time.RFC3339), "--to", to.Format(time.RFC3339)}
	before, stderr, code := env.run(t, "", append([]string{"export", "billing"}, rng...)...)
	if code != 0 || !strings.Contains(before, "acme,tenant_total") {
		t.Fatalf("billing before: exit %d %s %s", code, stderr, before)
	}
	backup := filepath.Join(dir, "acme.ndjson")
	if _, stderr, code := env.run(t, "", append([]string{"export", "events", "--tenant", "acme", "-o", backup}, rng...)...); code != 0 {
		t.Fatalf("export events: %s", stderr)
	}
	if _, stderr, code := env.run(t, "", "delete-tenant", "--tenant", "acme", "--yes"); code != 0 {
		t.Fatalf("delete-tenant: %s", stderr)
	}
	_, stderr, code = env.run(t, "", "import", "--input", backup)
	// 1500 acme events, less the voided one.
	if code != 0 || !strings.Contains(stderr, "read 1499, stored 1499, duplicates 0") {
		t.Fatalf("restore: exit %d %s", code, stderr)
	}
	after, stderr, code := env.run(t, "", append([]string{"export", "billing"}, rng...)...)
	if code != 0 || after != before {
		t.Fatalf("billing after the round trip differs (exit %d, %s):\nbefore\n%s\nafter\n%s", code, stderr, before, after)
	}
	var n uint64
	if err := env.st.Conn().QueryRow(context.Background(), "SELECT sum(count) FROM "+env.st.Table("usage_1m")+
		" WHERE tenant_id = 'acme'").Scan(&n); err != nil || n != 1499 {
		t.Fatalf("usage_1m of acme after the round trip: %d %v", n, err)
	}
	// The same through CSV, for the other tenant.
	backupCSV := filepath.Join(dir, "globex.csv")
	if _, stderr, code := env.run(t, "", append([]string{"export", "events", "--tenant", "globex", "--format", "csv", "-o", backupCSV}, rng...)...); code != 0 {
		t.Fatalf("export events csv: %s", stderr)
	}
	if _, stderr, code := env.run(t, "", "delete-tenant", "--tenant", "globex", "--yes"); code != 0 {
		t.Fatalf("delete-tenant: %s", stderr)
	}
	if _, stderr, code := env.run(t, "", "import", "--input", backupCSV); code != 0 || !strings.Contains(stderr, "read 1500, stored 1500") {
		t.Fatalf("restore from csv: exit %d %s", code, stderr)
	}
	if again, stderr, code := env.run(t, "", append([]string{"export", "billing"}, rng...)...); code != 0 || again != before {
		t.Fatalf("billing after the csv round trip differs (exit %d, %s):\n%s", code, stderr, again)
	}

	// The period was recorded; a later correction shows as an adjustment
	// against the last recorded export, here in a preview.
	if !strings.Contains(stderr, "recorded as bx-") {
		t.Fatalf("the export of a closed period was not recorded: %s", stderr)
	}
	if _, stderr, code := env.run(t, "", "correct", "--tenant", "globex", "--void", "--reason", "r", "--direct", "h00001"); code != 0 {
		t.Fatalf("void: %s", stderr)
	}
	preview, stderr, code := env.run(t, "", append([]string{"export", "billing", "--no-record"}, rng...)...)
	if code != 0 || !strings.Contains(preview, "globex,adjustment_total,,,,-1,") || strings.Contains(preview, "acme,adjustment") ||
		!strings.Contains(stderr, "1 tenants adjusted by -") || strings.Contains(stderr, "recorded as") {
		t.Fatalf("preview after a correction: exit %d %s\n%s", code, stderr, preview)
	}
}

func TestImportCommandReportsRejectedLines(t *testing.T) {
	env := newCLIEnv(t)
	now := time.Now().UTC().Add(-time.Hour).Format(time.RFC3339)
	input := `{"id":"a","tenant_id":"acme","kind":"api_request","time":"` + now + `"}
{"id":"b","tenant_id":"acme","kind":"api_request","time":"2001-01-01T00:00:00Z"}
not json
{"id":"c","tenant_id":"acme","kind":"api_request","time":"` + now + `"}
`
	path := filepath.Join(t.TempDir(), "bad.ndjson")
	if err := os.WriteFile(path, []byte(input), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := env.run(t, "", "import", "--input", path)
	if code != 1 || !strings.Contains(stderr, "read 4, stored 2, duplicates 0, rejected 2") ||
		!strings.Contains(stderr, "line 2: too_late") || !strings.Contains(stderr, "line 3: invalid_json") ||
		!strings.Contains(stderr, "rejected by reason: invalid_json 1, too_late 1") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	_, stderr, code = env.run(t, "", "import", "--input", path, "--allow-older")
	if code != 1 || !strings.Contains(stderr, "stored 1, duplicates 2, rejected 1") {
		t.Fatalf("--allow-older: exit %d, stderr:\n%s", code, stderr)
	}
	// Standard input, and usage errors.
	_, stderr, code = env.run(t, "id,tenant_id,kind,time\nd,acme,api_request,"+now+"\n", "import", "--input", "-")
	if code != 0 || !strings.Contains(stderr, "stored 1") {
		t.Fatalf("csv on stdin: exit %d %s", code, stderr)
	}
	for _, args := range [][]string{{"import"}, {"import", "--input", "/nonexistent"}, {"import", "--input", path, "--format", "xml"}} {
		if _, stderr, code := env.run(t, "", args...); code != 2 {
			t.Errorf("%v: exit %d %s, want 2", args, code, stderr)
		}
	}
}
