package event

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends the wire encoding of e to buf. It writes the same JSON
// that encoding/json would (time in RFC 3339 with milliseconds, UTC), without
// reflection, so emitters stay cheap.
func AppendJSON(buf []byte, e *Event) []byte {
	buf = append(buf, `{"id":`...)
	buf = appendString(buf, e.ID)
	buf = append(buf, `,"tenant_id":`...)
	buf = appendString(buf, e.TenantID)
	buf = append(buf, `,"kind":`...)
	buf = appendString(buf, e.Kind)
	buf = append(buf, `,"time":"`...)
	buf = e.Time.UTC().AppendFormat(buf, "2006-01-02T15:04:05.000Z07:00")
	buf = append(buf, `","quantity":`...)
	buf = strconv.AppendFloat(buf, e.Quantity, 'g', -1, 64)
	if e.Service != "" {
		buf = append(buf, `,"service":`...)
		buf = appendString(buf, e.Service)
	}
	if e.Route != "" {
		buf = append(buf, `,"route":`...)
		buf = appendString(buf, e.Route)
	}
	if e.UserID != "" {
		buf = append(buf, `,"user_id":`...)
		buf = appendString(buf, e.UserID)
	}
	if e.LatencyMs != 0 {
		buf = append(buf, `,"latency_ms":`...)
		buf = strconv.AppendFloat(buf, e.LatencyMs, 'g', -1, 64)
	}
	if e.StatusCode != 0 {
		buf = append(buf, `,"status_code":`...)
		buf = strconv.AppendInt(buf, int64(e.StatusCode), 10)
	}
	if e.Error {
		buf = append(buf, `,"error":true`...)
	}
	if len(e.Attrs) > 0 {
		buf = append(buf, `,"attrs":{`...)
		first := true
		for k, v := range e.Attrs {
			if !first {
				buf = append(buf, ',')
			}
			first = false
			buf = appendString(buf, k)
			buf = append(buf, ':')
			buf = appendString(buf, v)
		}
		buf = append(buf, '}')
	}
	return append(buf, '}')
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string, escaping what JSON requires and
// replacing invalid UTF-8 with U+FFFD, as encoding/json does.
func appendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch c {
			case '"', '\\':
				buf = append(buf, '\\', c)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

// Milli returns the sub-second part of t in milliseconds, which ClickHouse
// keeps in a column of its own.
func Milli(t time.Time) uint16 { return uint16(t.Nanosecond() / int(time.Millisecond)) }
