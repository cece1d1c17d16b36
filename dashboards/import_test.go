package dashboards

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// builtinUIDs are Grafana's own datasources, the same in every Grafana.
var builtinUIDs = map[string]bool{"-- Grafana --": true, mixedUID: true}

// dsRefs returns every datasource reference ({"type", "uid"}) in doc, with
// where it is.
func dsRefs(doc any, where string, out map[string]dsRef) {
	switch v := doc.(type) {
	case map[string]any:
		typ, tok := v["type"].(string)
		uid, uok := v["uid"].(string)
		if tok && uok && len(v) <= 3 { // {"type", "uid"} (and perhaps "name")
			out[where] = dsRef{Type: typ, UID: uid}
		}
		for k, x := range v {
			dsRefs(x, where+"."+k, out)
		}
	case []any:
		for i, x := range v {
			dsRefs(x, fmt.Sprintf("%s[%d]", where, i), out)
		}
	}
}

// TestDashboardsImport checks the form Grafana's "Import JSON" needs, next
// to provisioning: no datasource uid is hard-coded (the provisioned uids
// would not exist in another Grafana); every reference goes through a
// datasource variable of the right plugin, which Grafana points at a
// datasource of that type on import (the first one when the saved one is
// missing) and the user can change; a provisioned dashboard opens on the
// provisioned datasources; and __requires names the plugins and panels.
func TestDashboardsImport(t *testing.T) {
	provisioned := provisionedDatasources(t)
	for _, d := range loadDashboards(t) {
		dsVars := map[string]string{} // name -> plugin id
		for _, v := range d.Templating.List {
			if v.Type != "datasource" {
				continue
			}
			var plugin string
			if err := jsonString(v.Query, &plugin); err != nil || plugin == "" {
				t.Errorf("%s: datasource variable %q has no plugin id query", d.file, v.Name)
				continue
			}
			dsVars[v.Name] = plugin
			// Provisioning: the saved selection is the provisioned datasource.
			cur, _ := v.Current.Value.(string)
			if provisioned[cur] != plugin {
				t.Errorf("%s: datasource variable %q selects %q, want a provisioned %s datasource", d.file, v.Name, cur, plugin)
			}
		}
		refs := map[string]dsRef{}
		dsRefs(d.raw, d.file, refs)
		used := map[string]bool{}
		for where, ref := range refs {
			if builtinUIDs[ref.UID] {
				continue
			}
			m := dsVarRef.FindStringSubmatch(ref.UID)
			if m == nil {
				t.Errorf("%s: datasource uid %q is hard-coded; use a datasource variable so Import JSON works", where, ref.UID)
				continue
			}
			plugin, ok := dsVars[m[1]]
			if !ok {
				t.Errorf("%s: ${%s} is not a datasource variable of the dashboard", where, m[1])
				continue
			}
			if plugin != ref.Type {
				t.Errorf("%s: a %s reference through ${%s}, a %s variable", where, ref.Type, m[1], plugin)
			}
			used[plugin] = true
		}

		// Import into a Grafana with other uids: each datasource variable
		// lands on a datasource of its type; every query must follow.
		imported := *d
		imported.Templating.List = append([]variable(nil), d.Templating.List...)
		for i, v := range imported.Templating.List {
			if v.Type == "datasource" {
				imported.Templating.List[i].Current.Value = "imported-" + dsVars[v.Name]
			}
		}
		for _, q := range imported.queries(t) {
			if !strings.HasPrefix(q.ds, "imported-") {
				t.Errorf("%s: after import, the query points at %q, not at the datasource chosen on import", q.where, q.ds)
			}
		}

		var requires struct {
			Requires []struct {
				Type string `json:"type"`
				ID   string `json:"id"`
			} `json:"__requires"`
		}
		if err := remarshal(d.raw, &requires); err != nil {
			t.Fatal(err)
		}
		listed := map[string]bool{}
		for _, r := range requires.Requires {
			listed[r.Type+"/"+r.ID] = true
		}
		for plugin := range used {
			if !listed["datasource/"+plugin] {
				t.Errorf("%s: __requires does not list the datasource plugin %s", d.file, plugin)
			}
		}
		for _, p := range d.allPanels() {
			if p.Type != "row" && !listed["panel/"+p.Type] {
				t.Errorf("%s: __requires does not list the panel type %s", d.file, p.Type)
			}
		}
	}
}

// jsonString decodes a variable's query when it is a plain string.
func jsonString(raw []byte, s *string) error { return json.Unmarshal(raw, s) }

// remarshal decodes doc (a decoded JSON value) into v.
func remarshal(doc any, v any) error {
	b, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
