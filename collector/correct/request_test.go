package correct

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/collector/event"
)

func TestReadIDs(t *testing.T) {
	long := strings.Repeat("x", event.MaxIDLen+1)
	tests := []struct {
		name, in string
		want     []string
		wantErr  string
	}{
		{"ids, blanks and comments", "a\n\n# note\n  b  \n", []string{"a", "b"}, ""},
		{"empty", "# only a comment\n\n", nil, "holds no event ids"},
		{"too long", "a\n" + long + "\n", nil, ":2: an event id is at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ids.txt")
			if err := os.WriteFile(path, []byte(tt.in), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, src := range []struct{ path, stdin string }{{path, ""}, {"-", tt.in}} {
				got, err := ReadIDs(src.path, strings.NewReader(src.stdin))
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Errorf("%s: got %v, %v; want an error with %q", src.path, got, err, tt.wantErr)
					}
					continue
				}
				if err != nil || strings.Join(got, ",") != strings.Join(tt.want, ",") {
					t.Errorf("%s: got %q, %v; want %q", src.path, got, err, tt.want)
				}
			}
		})
	}
}

func TestForEvents(t *testing.T) {
	q := 2.0
	tmpl := event.Correction{TenantID: "acme", Action: event.ActionAmend, Quantity: &q, Reason: "dispute", By: "ops"}
	cs, err := ForEvents(tmpl, []string{"e1", "e2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 || cs[0].EventID != "e1" || cs[1].EventID != "e2" {
		t.Fatalf("got %+v; want one correction per event, in order", cs)
	}
	if cs[0].ID == cs[1].ID || !strings.HasPrefix(cs[0].ID, "cli-") {
		t.Errorf("got ids %q and %q; want distinct ids under one cli- prefix", cs[0].ID, cs[1].ID)
	}
	if cs[0].Quantity == cs[1].Quantity || *cs[1].Quantity != 2 {
		t.Errorf("got shared or wrong quantities; want a copy of 2 each")
	}
	again, err := ForEvents(tmpl, []string{"e1"})
	if err != nil || again[0].ID == cs[0].ID {
		t.Errorf("got id %q again, %v; want a new prefix per batch", again[0].ID, err)
	}
	tmpl.Reason = ""
	if _, err := ForEvents(tmpl, []string{"e1"}); err == nil || !strings.Contains(err.Error(), `event "e1"`) {
		t.Errorf("got %v; want the invalid correction refused, naming its event", err)
	}
}
