package pgstat

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

// TestCLIExitCodes runs the real `tenantguard pg-audit` binary against the
// test schema: exit 1 with findings, 0 on a clean database, 2 on error.
func TestCLIExitCodes(t *testing.T) {
	bin := testenv.Binary(t)
	run := func(args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"pg-audit"}, args...)...)
		cmd.Dir = t.TempDir() // no tenantguard.yaml here
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), code
	}

	e := setupPG(t)
	runWorkload(t, e.app, workload)
	text, _, code := run("--dsn", e.auditor)
	if code != 1 {
		t.Fatalf("findings: exit %d, want 1\n%s", code, text)
	}
	for _, want := range []string{"table public.items", "unscoped", "multi_tenant", "fix:", "RLS audit", "rls_not_forced_owner", "summary:"} {
		if !strings.Contains(text, want) {
			t.Errorf("text output lacks %q", want)
		}
	}
	t.Logf("text report:\n%s", text)
	js, _, code := run("--dsn", e.auditor, "--format", "json")
	if code != 1 {
		t.Fatalf("json: exit %d, want 1", code)
	}
	var rep Report
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatalf("json output: %v", err)
	}
	if rep.Version != ReportVersion || len(rep.Databases) != 1 || len(rep.Databases[0].Findings) == 0 {
		t.Fatalf("json report: %+v", rep)
	}
	// --min-calls above every count leaves only the RLS lints.
	js, _, _ = run("--dsn", e.auditor, "--format", "json", "--min-calls", "1000")
	rep = Report{}
	if err := json.Unmarshal([]byte(js), &rep); err != nil || len(rep.Databases[0].Findings) != 0 {
		t.Fatalf("--min-calls 1000: %v findings %d", err, len(rep.Databases[0].Findings))
	}

	clean := setupCleanDB(t)
	out, _, code := run("--dsn", clean)
	if code != 0 {
		t.Fatalf("clean database: exit %d, want 0\n%s", code, out)
	}
	_, stderr, code := run("--dsn", e.app)
	if code != 2 || !strings.Contains(stderr, "pg_read_all_stats") {
		t.Fatalf("no privilege: exit %d stderr %q, want 2 naming pg_read_all_stats", code, stderr)
	}
}

// setupCleanDB is a database whose tables have no tenant column, with
// a little workload.
func setupCleanDB(t *testing.T) string {
	t.Helper()
	_, dsn := testenv.Postgres(t)
	runWorkload(t, dsn, []workItem{
		{sql: "CREATE TABLE countries (code text PRIMARY KEY, name text)"},
		{sql: "SELECT name FROM countries WHERE code = $1", args: []any{"fr"}},
	})
	return dsn
}
