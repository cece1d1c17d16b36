package api

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
)

// Bounds on raw parameters, checked before anything is parsed.
const (
	maxQueryLen  = 4096
	maxParamLen  = 256
	maxOffset    = 1_000_000
	cursorPrefix = "o1:"
)

// params parses and validates query parameters strictly: an unknown or
// repeated parameter is an error, so a typo never silently widens a query.
// The first error wins; every getter returns a zero value after it.
type params struct {
	v    url.Values
	used map[string]bool
	err  error
}

func parseParams(rawQuery string) *params {
	p := &params{used: map[string]bool{}}
	if len(rawQuery) > maxQueryLen {
		p.err = fmt.Errorf("query string longer than %d bytes", maxQueryLen)
		return p
	}
	v, err := url.ParseQuery(rawQuery)
	if err != nil {
		p.err = errors.New("malformed query string")
		return p
	}
	for k, vals := range v {
		if len(vals) > 1 {
			p.err = fmt.Errorf("%s: given more than once", safe(k))
			return p
		}
		if len(vals[0]) > maxParamLen {
			p.err = fmt.Errorf("%s: longer than %d bytes", safe(k), maxParamLen)
			return p
		}
	}
	p.v = v
	return p
}

// safe quotes a user string for an error message, bounded.
func safe(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return strconv.Quote(s)
}

func (p *params) fail(format string, args ...any) {
	if p.err == nil {
		p.err = fmt.Errorf(format, args...)
	}
}

func (p *params) get(name string) (string, bool) {
	p.used[name] = true
	if p.err != nil {
		return "", false
	}
	vals, ok := p.v[name]
	if !ok {
		return "", false
	}
	return vals[0], true
}

// done reports the first error, or an unknown parameter.
func (p *params) done() error {
	if p.err != nil {
		return p.err
	}
	for k := range p.v {
		if !p.used[k] {
			return fmt.Errorf("%s: unknown parameter", safe(k))
		}
	}
	return nil
}

func (p *params) time(name string) time.Time {
	s, ok := p.get(name)
	if !ok {
		if p.err == nil {
			p.fail("%s: required, an RFC 3339 time like 2026-11-01T00:00:00Z", name)
		}
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		p.fail("%s: %s is not an RFC 3339 time like 2026-11-01T00:00:00Z", name, safe(s))
		return time.Time{}
	}
	return t.UTC()
}

// timeRange reads from (inclusive) and to (exclusive) and bounds the span.
func (p *params) timeRange(maxRange time.Duration) (from, to time.Time) {
	from, to = p.time("from"), p.time("to")
	if p.err != nil {
		return
	}
	switch {
	case !to.After(from):
		p.fail("to: must be after from")
	case to.Sub(from) > maxRange:
		p.fail("to: the range from..to is longer than the maximum %s", maxRange)
	case from.Year() < 1970 || to.Year() > 2105:
		p.fail("from, to: must lie between 1970 and 2105")
	}
	return
}

// enum reads name, which must be one of allowed; def when absent.
func (p *params) enum(name, def string, allowed ...string) string {
	s, ok := p.get(name)
	if !ok {
		return def
	}
	for _, a := range allowed {
		if s == a {
			return s
		}
	}
	p.fail("%s: %s must be one of %s", name, safe(s), strings.Join(allowed, ", "))
	return def
}

// tenant reads an optional tenant id.
func (p *params) tenant(name string) string {
	s, ok := p.get(name)
	if !ok {
		return ""
	}
	if !event.ValidTenantID(s) {
		p.fail("%s: %s must match %s", name, safe(s), event.TenantPattern)
		return ""
	}
	return s
}

// kind reads an optional kind name.
func (p *params) kind(name string) string {
	s, ok := p.get(name)
	if !ok {
		return ""
	}
	if !event.ValidKindName(s) {
		p.fail("%s: %s must match %s", name, safe(s), event.KindPattern)
		return ""
	}
	return s
}

// dbName reads an optional Postgres database name. Only plain names are
// accepted ([A-Za-z0-9_.$-], 1 to 63 bytes); it is bound, never spliced.
func (p *params) dbName(name string) string {
	s, ok := p.get(name)
	if !ok {
		return ""
	}
	if len(s) == 0 || len(s) > 63 {
		p.fail("%s: must be 1 to 63 bytes", name)
		return ""
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '$' || c == '-') {
			p.fail("%s: %s may hold only letters, digits and _ . $ -", name, safe(s))
			return ""
		}
	}
	return s
}

// page reads limit and cursor.
func (p *params) page(def, max int) (limit, offset int) {
	limit = def
	if s, ok := p.get("limit"); ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > max {
			p.fail("limit: %s must be an integer from 1 to %d", safe(s), max)
			return def, 0
		}
		limit = n
	}
	if s, ok := p.get("cursor"); ok {
		o, err := decodeCursor(s)
		if err != nil {
			p.fail("cursor: %v", err)
			return limit, 0
		}
		offset = o
	}
	if offset+limit > maxOffset {
		p.fail("cursor: paging deeper than %d rows; narrow the range instead", maxOffset)
	}
	return limit, offset
}

// A cursor is opaque to clients: today it encodes an offset, versioned so
// it can become a keyset position without breaking them.
func encodeCursor(offset int) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + strconv.Itoa(offset)))
}

func decodeCursor(s string) (int, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || !strings.HasPrefix(string(b), cursorPrefix) {
		return 0, errors.New("not a cursor returned by this API")
	}
	n, err := strconv.Atoi(string(b[len(cursorPrefix):]))
	if err != nil || n < 0 || n > maxOffset {
		return 0, errors.New("not a cursor returned by this API")
	}
	return n, nil
}
