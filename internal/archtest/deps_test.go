package archtest

import (
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/tenantguard/tenantguard"

// heavy are the imports a service must never get from the SDK: ClickHouse,
// viper and cobra (the CLI's config), nats-server, the cgo SQL parser and
// pgx.
var heavy = []string{
	"github.com/ClickHouse/",
	"github.com/spf13/viper",
	"github.com/spf13/cobra",
	"github.com/nats-io/nats-server/",
	"github.com/pganalyze/pg_query_go",
	"github.com/jackc/pgx",
}

// sdk are the project's packages an SDK package may import.
var sdk = []string{
	module + "/collector/event",
	module + "/collector/emit",
	module + "/collector/meter",
	module + "/limiter",
	// Opens streams and buckets without changing them: the SDKs' share of
	// the rule that only run and migrate create them. It imports jetstream only.
	module + "/internal/provision",
}

// rule is what the packages matched by a pattern may import.
type rule struct {
	pattern string
	allow   []string // exceptions to heavy
}

var rules = []rule{
	{pattern: "./limiter/..."},
	{pattern: "./collector/emit/..."},
	{pattern: "./collector/event/..."},
	{pattern: "./collector/meter/..."},
	// The Postgres tracer alone may import pgx (and nothing in the SDK
	// imports it: it is not in sdk).
	{pattern: "./collector/pgmeter/...", allow: []string{"github.com/jackc/pgx"}},
}

// deps returns each package matched by pattern with its transitive
// non-test imports, from go list.
func deps(t *testing.T, pattern string) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, pattern)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("go list %s: %v\n%s", pattern, err, msg)
	}
	got := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			got[f[0]] = f[1:]
		}
	}
	return got
}

// violations lists the imports of pkgs that break r.
func violations(r rule, pkgs map[string][]string) []string {
	var bad []string
	for pkg, ds := range pkgs {
	next:
		for _, d := range ds {
			for _, a := range r.allow {
				if strings.HasPrefix(d, a) {
					continue next
				}
			}
			for _, h := range heavy {
				if strings.HasPrefix(d, h) {
					bad = append(bad, pkg+" imports "+d)
					continue next
				}
			}
			if strings.HasPrefix(d, module+"/") && !inSDK(d) {
				bad = append(bad, pkg+" imports "+d+", which is not an SDK package")
			}
		}
	}
	sort.Strings(bad)
	return bad
}

func inSDK(pkg string) bool {
	for _, s := range sdk {
		if pkg == s || strings.HasPrefix(pkg, s+"/") {
			return true
		}
	}
	return false
}

// TestSDKStaysLight: the SDK's packages, with every subpackage, import
// none of the heavy dependencies and no server package of the project;
// only collector/pgmeter imports pgx.
func TestSDKStaysLight(t *testing.T) {
	for _, r := range rules {
		t.Run(r.pattern, func(t *testing.T) {
			pkgs := deps(t, r.pattern)
			if len(pkgs) == 0 {
				t.Fatalf("%s matches no package", r.pattern)
			}
			for _, v := range violations(r, pkgs) {
				t.Error(v)
			}
		})
	}
}

// TestRuleCatchesHeavyImports: the check fails a package that does import
// a heavy dependency, and one that imports a server package.
func TestRuleCatchesHeavyImports(t *testing.T) {
	cases := []struct {
		pattern, want string
	}{
		{"./collector/store", "github.com/ClickHouse/"},
		{"./collector/pgstat", "github.com/pganalyze/pg_query_go"},
		{"./collector/pgmeter", module + "/collector/pgmeter"}, // under the SDK rule, not its own
		{"./anomaly", module + "/anomaly"},
	}
	for _, c := range cases {
		pkgs := deps(t, c.pattern)
		// A package is not its own dependency; check the root as well.
		for p, ds := range pkgs {
			pkgs[p] = append(ds, p)
		}
		found := false
		for _, v := range violations(rule{pattern: c.pattern}, pkgs) {
			if strings.Contains(v, c.want) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: the rule did not flag %s", c.pattern, c.want)
		}
	}
}
