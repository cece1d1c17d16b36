package decide

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/limiter"
)

func TestListingEscapesTerminalControls(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	d := limiter.Decision{TenantID: "acme", Scope: limiter.ScopeAll, Action: limiter.ActionThrottle, RatePerSec: 5,
		IssuedAt: now, ExpiresAt: now.Add(time.Hour), Reason: "x\x1b[31mred\u202e\u009b", Source: limiter.SourceManual}
	clear := d
	clear.Action = limiter.ActionClear
	entries := []limiter.Entry{{Key: "acme", Decision: d}, {Key: "beta", Decision: clear, Reject: "unsigned"}}
	tests := []struct {
		all  bool
		want int
	}{{false, 1}, {true, 2}}
	for _, tt := range tests {
		if got := List(entries, tt.all); len(got) != tt.want {
			t.Errorf("List(all=%v): got %d decisions, want %d", tt.all, len(got), tt.want)
		}
	}
	ds := List(entries, false)
	if ds[0].Mode != limiter.ModeEnforce || ds[0].Signature != "ok" {
		t.Errorf("got mode %q signature %q; want enforce and ok", ds[0].Mode, ds[0].Signature)
	}
	var text bytes.Buffer
	if err := WriteText(&text, ds, now); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(text.String(), "\x1b\u202e\u009b") || !strings.Contains(text.String(), `x\x1b[31mred\u202e\u009b`) {
		t.Errorf("text: got %q; want the controls escaped", text.String())
	}
	var js bytes.Buffer
	if err := WriteJSON(&js, ds); err != nil {
		t.Fatal(err)
	}
	var back []Listed
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back[0].Reason != d.Reason {
		t.Errorf("json: got %v, %q; want valid JSON with the reason unchanged", err, js.String())
	}
	if strings.ContainsAny(js.String(), "\x1b\u202e\u009b") {
		t.Errorf("json: got %q; want no raw controls", js.String())
	}
	var empty bytes.Buffer
	if err := WriteText(&empty, nil, now); err != nil || !strings.Contains(empty.String(), "no live decisions") {
		t.Errorf("empty: got %q, %v; want \"no live decisions\"", empty.String(), err)
	}
}
