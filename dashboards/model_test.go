package dashboards

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Datasource uids provisioned by provisioning/datasources/tenantguard.yml.
const (
	promUID  = "tenantguard-prometheus"
	chUID    = "tenantguard-clickhouse"
	mixedUID = "-- Mixed --"
)

type dsRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	RefID      string `json:"refId"`
	Datasource *dsRef `json:"datasource"`
	Expr       string `json:"expr"`
	RawSQL     string `json:"rawSql"`
	Instant    bool   `json:"instant"`
}

type panel struct {
	ID         int      `json:"id"`
	Type       string   `json:"type"`
	Title      string   `json:"title"`
	Datasource *dsRef   `json:"datasource"`
	Targets    []target `json:"targets"`
	Panels     []panel  `json:"panels"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Datasource *dsRef          `json:"datasource"`
	Query      json.RawMessage `json:"query"`
	Current    struct {
		Value any `json:"value"`
	} `json:"current"`
}

type annotation struct {
	Name       string  `json:"name"`
	BuiltIn    int     `json:"builtIn"`
	Datasource *dsRef  `json:"datasource"`
	Target     *target `json:"target"`
}

type dashboard struct {
	file       string
	raw        any     // the whole document, for the import checks
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []annotation `json:"list"`
	} `json:"annotations"`
}

// query is one executable query of a dashboard: a panel target, an
// annotation or a variable.
type query struct {
	where string // dashboard / panel title / refId
	ds    string // datasource uid
	text  string // expr or rawSql
}

func loadDashboards(t *testing.T) []*dashboard {
	t.Helper()
	files, err := filepath.Glob("json/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards under json/: %v", err)
	}
	sort.Strings(files)
	var out []*dashboard
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d := &dashboard{file: f}
		if err := json.Unmarshal(b, d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := json.Unmarshal(b, &d.raw); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, d)
	}
	return out
}

// allPanels flattens rows.
func (d *dashboard) allPanels() []panel {
	var out []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// dsVarRef matches a datasource reference through a variable: ${name}.
var dsVarRef = regexp.MustCompile(`^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$`)

// uid is the datasource uid ref points at: a ${variable} reference is
// resolved to the datasource variable's current value, as Grafana does;
// "" when it names no datasource variable.
func (d *dashboard) uid(ref *dsRef) string {
	if ref == nil {
		return ""
	}
	m := dsVarRef.FindStringSubmatch(ref.UID)
	if m == nil {
		return ref.UID
	}
	for _, v := range d.Templating.List {
		if v.Name == m[1] && v.Type == "datasource" {
			s, _ := v.Current.Value.(string)
			return s
		}
	}
	return ""
}

// queries lists every query of d with its effective datasource uid.
func (d *dashboard) queries(t *testing.T) []query {
	t.Helper()
	var out []query
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			ds := ""
			if tg.Datasource != nil {
				ds = d.uid(tg.Datasource)
			} else if p.Datasource != nil {
				ds = d.uid(p.Datasource)
			}
			text := tg.Expr
			if ds == chUID {
				text = tg.RawSQL
			}
			out = append(out, query{where: d.Title + " / " + p.Title + " / " + tg.RefID, ds: ds, text: text})
		}
	}
	for _, a := range d.Annotations.List {
		if a.BuiltIn == 1 {
			continue
		}
		if a.Target == nil || a.Datasource == nil {
			t.Errorf("%s: annotation %q has no target or datasource", d.Title, a.Name)
			continue
		}
		ds := d.uid(a.Datasource)
		text := a.Target.Expr
		if ds == chUID {
			text = a.Target.RawSQL
		}
		out = append(out, query{where: d.Title + " / annotation " + a.Name, ds: ds, text: text})
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			_ = json.Unmarshal(v.Query, &q.Query) // older string form
		}
		out = append(out, query{where: d.Title + " / variable " + v.Name, ds: d.uid(v.Datasource), text: q.Query})
	}
	return out
}

// builtins are Grafana's global variables and the ClickHouse plugin macros.
var builtins = map[string]bool{
	"__rate_interval": true, "__interval": true, "__interval_ms": true, "__range": true, "__range_s": true,
	"__timeFilter": true, "__fromTime": true, "__toTime": true, "__interval_s": true,
}

// varRef matches $name and ${name}.
var varRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

func refName(m []string) string {
	if m[1] != "" {
		return m[1]
	}
	return m[2]
}

// expandVars substitutes every $name and ${name} from vars; an unknown
// reference fails the test.
func expandVars(t *testing.T, q string, vars map[string]string) string {
	t.Helper()
	return varRef.ReplaceAllStringFunc(q, func(m string) string {
		name := refName(varRef.FindStringSubmatch(m))
		v, ok := vars[name]
		if !ok {
			t.Errorf("no expansion for %s in %q", m, q)
			return m
		}
		return v
	})
}

// TestDashboardsResolve checks uids, panel ids, datasources and every
// variable reference.
func TestDashboardsResolve(t *testing.T) {
	ds := provisionedDatasources(t)
	for _, want := range []string{promUID, chUID} {
		if _, ok := ds[want]; !ok {
			t.Fatalf("provisioning does not define datasource uid %q (has %v)", want, ds)
		}
	}
	if ds[promUID] != "prometheus" || ds[chUID] != "grafana-clickhouse-datasource" {
		t.Fatalf("datasource types = %v", ds)
	}
	uids := map[string]string{}
	titles := map[string]bool{}
	for _, d := range loadDashboards(t) {
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: missing uid or title", d.file)
		}
		if prev, dup := uids[d.UID]; dup {
			t.Errorf("%s: uid %q already used by %s", d.file, d.UID, prev)
		}
		uids[d.UID] = d.file
		if titles[d.Title] {
			t.Errorf("%s: duplicate title %q", d.file, d.Title)
		}
		titles[d.Title] = true

		vars := map[string]bool{}
		for _, v := range d.Templating.List {
			if vars[v.Name] {
				t.Errorf("%s: variable %q defined twice", d.file, v.Name)
			}
			vars[v.Name] = true
			if v.Type == "query" {
				if v.Datasource == nil || ds[d.uid(v.Datasource)] == "" {
					t.Errorf("%s: variable %q datasource does not resolve", d.file, v.Name)
				}
			}
		}
		ids := map[int]string{}
		for _, p := range d.allPanels() {
			if p.ID <= 0 {
				t.Errorf("%s: panel %q has no id", d.file, p.Title)
			}
			if prev, dup := ids[p.ID]; dup {
				t.Errorf("%s: panel id %d used by %q and %q", d.file, p.ID, prev, p.Title)
			}
			ids[p.ID] = p.Title
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no queries", d.file, p.Title)
			}
			if p.Datasource == nil {
				t.Errorf("%s: panel %q has no datasource", d.file, p.Title)
				continue
			}
			mixed := p.Datasource.UID == mixedUID
			panelUID := d.uid(p.Datasource)
			if !mixed && ds[panelUID] == "" {
				t.Errorf("%s: panel %q datasource uid %q not provisioned", d.file, p.Title, p.Datasource.UID)
			}
			for _, tg := range p.Targets {
				if tg.Datasource == nil {
					if mixed {
						t.Errorf("%s: panel %q: mixed panel target %s has no datasource", d.file, p.Title, tg.RefID)
					}
					continue
				}
				typ, ok := ds[d.uid(tg.Datasource)]
				if !ok || typ != tg.Datasource.Type {
					t.Errorf("%s: panel %q target %s datasource %+v not provisioned", d.file, p.Title, tg.RefID, *tg.Datasource)
				}
				if !mixed && d.uid(tg.Datasource) != panelUID {
					t.Errorf("%s: panel %q target %s uses %s in a %s panel (make the panel mixed)", d.file, p.Title, tg.RefID, tg.Datasource.UID, p.Datasource.UID)
				}
			}
		}
		qs := d.queries(t)
		if len(qs) == 0 {
			t.Errorf("%s: no queries", d.file)
		}
		for _, q := range qs {
			if strings.TrimSpace(q.text) == "" {
				t.Errorf("%s: empty query", q.where)
			}
			if _, ok := ds[q.ds]; !ok {
				t.Errorf("%s: datasource uid %q not provisioned", q.where, q.ds)
			}
			for _, m := range varRef.FindAllStringSubmatch(q.text, -1) {
				name := refName(m)
				if strings.HasPrefix(name, "__") {
					if !builtins[name] {
						t.Errorf("%s: unknown macro $%s", q.where, name)
					}
					continue
				}
				if !vars[name] {
					t.Errorf("%s: variable $%s is not defined on the dashboard", q.where, name)
				}
			}
		}
	}
	if len(uids) != 4 {
		t.Errorf("%d dashboards, want 4 (SRE overview, tenant drill-down, billing, pipeline health)", len(uids))
	}
}
