package event

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// Field bits, to catch duplicate keys: two parsers that disagree on which
// duplicate wins are a classic way to smuggle a tenant id past a check.
const (
	fID = 1 << iota
	fTenant
	fKind
	fTime
	fQuantity
	fService
	fRoute
	fUser
	fLatency
	fStatus
	fError
	fAttrs
)

// Decode parses one JSON event into e, replacing its contents. It is a
// single-pass scanner for the flat v1 object: it allocates only the strings
// it keeps, and it rejects what encoding/json would reject plus duplicate
// keys, invalid UTF-8 and trailing data. Unknown fields are skipped, so newer
// producers can add fields. A missing quantity defaults to 1.
func Decode(data []byte, e *Event) *ValidationError {
	*e = Event{Quantity: 1}
	d := decoder{b: data}
	d.ws()
	if !d.eat('{') {
		return d.syntax("expected an object")
	}
	var seen uint32
	d.ws()
	if d.eat('}') {
		return d.end()
	}
	for {
		d.ws()
		key, ok := d.rawString()
		if !ok {
			return d.syntax("expected a field name")
		}
		d.ws()
		if !d.eat(':') {
			return d.syntax("expected ':'")
		}
		d.ws()
		bit, verr := d.field(key, e)
		if verr != nil {
			return verr
		}
		if bit != 0 {
			if seen&bit != 0 {
				return invalid(ReasonInvalidJSON, string(key), "duplicate field")
			}
			seen |= bit
		}
		d.ws()
		if d.eat(',') {
			continue
		}
		if d.eat('}') {
			return d.end()
		}
		return d.syntax("expected ',' or '}'")
	}
}

type decoder struct {
	b []byte
	i int
}

func (d *decoder) syntax(msg string) *ValidationError {
	return invalid(ReasonInvalidJSON, "", "%s at offset %d", msg, d.i)
}

func (d *decoder) end() *ValidationError {
	d.ws()
	if d.i != len(d.b) {
		return d.syntax("unexpected data after the object")
	}
	return nil
}

func (d *decoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *decoder) eat(c byte) bool {
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

func (d *decoder) peek() byte {
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

// field decodes the value of key into e and returns the key's bit (0 for an
// unknown key, whose value is skipped).
func (d *decoder) field(key []byte, e *Event) (uint32, *ValidationError) {
	var err *ValidationError
	switch string(key) {
	case "id":
		e.ID, err = d.str("id")
		return fID, err
	case "tenant_id":
		e.TenantID, err = d.str("tenant_id")
		return fTenant, err
	case "kind":
		e.Kind, err = d.str("kind")
		return fKind, err
	case "time":
		var s string
		if s, err = d.str("time"); err == nil && s != "" {
			t, perr := time.Parse(time.RFC3339Nano, s)
			if perr != nil {
				return fTime, invalid(ReasonBadTime, "time", "%q is not RFC 3339", truncate(s))
			}
			e.Time = t
		}
		return fTime, err
	case "quantity":
		if d.null() {
			return fQuantity, nil
		}
		e.Quantity, err = d.num("quantity")
		return fQuantity, err
	case "service":
		e.Service, err = d.str("service")
		return fService, err
	case "route":
		e.Route, err = d.str("route")
		return fRoute, err
	case "user_id":
		e.UserID, err = d.str("user_id")
		return fUser, err
	case "latency_ms":
		e.LatencyMs, err = d.num("latency_ms")
		return fLatency, err
	case "status_code":
		var f float64
		f, err = d.num("status_code")
		if err == nil && (f != float64(int(f)) || f < 0 || f > 999) {
			err = invalid(ReasonBadField, "status_code", "must be an integer 0 to 999")
		}
		e.StatusCode = int(f)
		return fStatus, err
	case "error":
		e.Error, err = d.boolean("error")
		return fError, err
	case "attrs":
		e.Attrs, err = d.attrs()
		return fAttrs, err
	}
	return 0, d.skip()
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

func (d *decoder) null() bool {
	if len(d.b)-d.i >= 4 && string(d.b[d.i:d.i+4]) == "null" {
		d.i += 4
		return true
	}
	return false
}

// rawString scans a JSON string and returns its bytes between the quotes,
// unescaped only when it holds no escapes. ok is false on a syntax error.
func (d *decoder) rawString() ([]byte, bool) {
	if !d.eat('"') {
		return nil, false
	}
	start := d.i
	escaped := false
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			raw := d.b[start:d.i]
			d.i++
			if escaped {
				var s string
				if json.Unmarshal(d.b[start-1:d.i], &s) != nil {
					return nil, false
				}
				return []byte(s), true
			}
			if !utf8.Valid(raw) {
				return nil, false
			}
			return raw, true
		case c == '\\':
			escaped = true
			d.i += 2
		case c < 0x20:
			return nil, false
		default:
			d.i++
		}
	}
	return nil, false
}

func (d *decoder) str(field string) (string, *ValidationError) {
	if d.null() {
		return "", nil
	}
	if d.peek() != '"' {
		if err := d.skip(); err != nil {
			return "", err
		}
		return "", invalid(ReasonWrongType, field, "must be a string")
	}
	raw, ok := d.rawString()
	if !ok {
		return "", d.syntax("bad string in " + field)
	}
	if k, ok := internedKinds[string(raw)]; ok {
		return k, nil
	}
	return string(raw), nil
}

// internedKinds avoids allocating the few strings that repeat on every event.
var internedKinds = func() map[string]string {
	m := make(map[string]string, len(BuiltinKinds))
	for _, k := range BuiltinKinds {
		m[k] = k
	}
	return m
}()

func (d *decoder) num(field string) (float64, *ValidationError) {
	if d.null() {
		return 0, nil
	}
	start := d.i
	d.eat('-')
	if d.eat('0') {
		// a leading zero stands alone
	} else if c := d.peek(); c >= '1' && c <= '9' {
		d.digits()
	} else {
		if d.peek() == '"' || d.peek() == 't' || d.peek() == 'f' || d.peek() == '{' || d.peek() == '[' {
			if err := d.skip(); err != nil {
				return 0, err
			}
			return 0, invalid(ReasonWrongType, field, "must be a number")
		}
		return 0, d.syntax("bad number in " + field)
	}
	if d.eat('.') {
		if n := d.digits(); n == 0 {
			return 0, d.syntax("bad number in " + field)
		}
	}
	if c := d.peek(); c == 'e' || c == 'E' {
		d.i++
		if c := d.peek(); c == '+' || c == '-' {
			d.i++
		}
		if n := d.digits(); n == 0 {
			return 0, d.syntax("bad number in " + field)
		}
	}
	f, err := strconv.ParseFloat(string(d.b[start:d.i]), 64)
	if err != nil {
		// Only overflow reaches here: the grammar was checked above.
		return 0, invalid(ReasonBadField, field, "number out of range")
	}
	return f, nil
}

func (d *decoder) digits() int {
	n := 0
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
		n++
	}
	return n
}

func (d *decoder) boolean(field string) (bool, *ValidationError) {
	switch {
	case d.null():
		return false, nil
	case len(d.b)-d.i >= 4 && string(d.b[d.i:d.i+4]) == "true":
		d.i += 4
		return true, nil
	case len(d.b)-d.i >= 5 && string(d.b[d.i:d.i+5]) == "false":
		d.i += 5
		return false, nil
	}
	if err := d.skip(); err != nil {
		return false, err
	}
	return false, invalid(ReasonWrongType, field, "must be true or false")
}

func (d *decoder) attrs() (map[string]string, *ValidationError) {
	if d.null() {
		return nil, nil
	}
	if d.peek() != '{' {
		if err := d.skip(); err != nil {
			return nil, err
		}
		return nil, invalid(ReasonWrongType, "attrs", "must be an object of strings")
	}
	d.i++
	d.ws()
	if d.eat('}') {
		return nil, nil
	}
	m := make(map[string]string, 4)
	for {
		d.ws()
		k, ok := d.rawString()
		if !ok {
			return nil, d.syntax("expected an attrs key")
		}
		d.ws()
		if !d.eat(':') {
			return nil, d.syntax("expected ':' in attrs")
		}
		d.ws()
		if d.peek() != '"' {
			if err := d.skip(); err != nil {
				return nil, err
			}
			return nil, invalid(ReasonBadAttrs, "attrs."+truncate(string(k)), "value must be a string")
		}
		v, ok := d.rawString()
		if !ok {
			return nil, d.syntax("bad attrs value")
		}
		if _, dup := m[string(k)]; dup {
			return nil, invalid(ReasonInvalidJSON, "attrs."+truncate(string(k)), "duplicate key")
		}
		if len(m) == MaxAttrs {
			return nil, invalid(ReasonBadAttrs, "attrs", "at most %d keys", MaxAttrs)
		}
		m[string(k)] = string(v)
		d.ws()
		if d.eat(',') {
			continue
		}
		if d.eat('}') {
			return m, nil
		}
		return nil, d.syntax("expected ',' or '}' in attrs")
	}
}

// skip passes over any JSON value, checking its syntax. Nesting is bounded by
// MaxSize, so recursion depth is too.
func (d *decoder) skip() *ValidationError {
	switch c := d.peek(); {
	case c == '"':
		if _, ok := d.rawString(); !ok {
			return d.syntax("bad string")
		}
	case c == '{' || c == '[':
		closeCh := byte('}')
		if c == '[' {
			closeCh = ']'
		}
		d.i++
		d.ws()
		if d.eat(closeCh) {
			return nil
		}
		for {
			d.ws()
			if c == '{' {
				if _, ok := d.rawString(); !ok {
					return d.syntax("expected a field name")
				}
				d.ws()
				if !d.eat(':') {
					return d.syntax("expected ':'")
				}
				d.ws()
			}
			if err := d.skip(); err != nil {
				return err
			}
			d.ws()
			if d.eat(',') {
				continue
			}
			if d.eat(closeCh) {
				return nil
			}
			return d.syntax("unterminated container")
		}
	case c == 't' || c == 'f' || c == 'n':
		for _, lit := range []string{"true", "false", "null"} {
			if len(d.b)-d.i >= len(lit) && string(d.b[d.i:d.i+len(lit)]) == lit {
				d.i += len(lit)
				return nil
			}
		}
		return d.syntax("bad literal")
	default:
		if _, err := d.num("value"); err != nil {
			return err
		}
	}
	return nil
}
