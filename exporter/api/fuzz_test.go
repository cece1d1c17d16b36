package api

import (
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
)

// FuzzParams feeds arbitrary query strings through every parameter parser:
// they must never panic, and whatever they accept must be within bounds.
func FuzzParams(f *testing.F) {
	for _, s := range []string{
		"from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z",
		"from=2026-11-01T00:00:00.5Z&to=2026-11-01T00:00:01+02:00&tenant=acme&limit=5&cursor=" + encodeCursor(10),
		"tenant=acme'%20OR%201=1&limit=-1&cursor=%00",
		"window=day&kind=ai_tokens&database=app&status=firing&format=csv",
		"%zz&&&=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		p := parseParams(q)
		from, to := p.timeRange(31 * 24 * time.Hour)
		tenant := p.tenant("tenant")
		kind := p.kind("kind")
		db := p.dbName("database")
		window := p.enum("window", "hour", "minute", "hour", "day")
		limit, offset := p.page(100, 1000)
		if p.done() != nil {
			return
		}
		if !to.After(from) || to.Sub(from) > 31*24*time.Hour {
			t.Fatalf("accepted range %s..%s", from, to)
		}
		if tenant != "" && !event.ValidTenantID(tenant) {
			t.Fatalf("accepted tenant %q", tenant)
		}
		if kind != "" && !event.ValidKindName(kind) {
			t.Fatalf("accepted kind %q", kind)
		}
		if strings.ContainsAny(db, "'\"\\ ;\x00") {
			t.Fatalf("accepted database %q", db)
		}
		if windowExpr[window] == "" || limit < 1 || limit > 1000 || offset < 0 || offset+limit > maxOffset {
			t.Fatalf("accepted window %q limit %d offset %d", window, limit, offset)
		}
	})
}

func FuzzCursor(f *testing.F) {
	f.Add(encodeCursor(0))
	f.Add(encodeCursor(999999))
	f.Add("bzE6LTE")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := decodeCursor(s)
		if err != nil {
			return
		}
		if n < 0 || n > maxOffset {
			t.Fatalf("decoded offset %d", n)
		}
		if m, err := decodeCursor(encodeCursor(n)); err != nil || m != n {
			t.Fatalf("round trip %d -> %d, %v", n, m, err)
		}
	})
}
