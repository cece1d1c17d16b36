package event

import (
	"encoding/json"
	"strconv"
	"unicode"
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

// maxDepth bounds the nesting of skipped unknown values, so a hostile body
// cannot drive the recursive skip into a stack overflow.
const maxDepth = 64

// Decode parses one JSON event into e, replacing its contents. It is a
// single-pass scanner for the flat v1 object: it allocates only the strings
// it keeps, and it rejects what encoding/json would reject plus duplicate
// keys, keys that differ from a v1 field name only in case, invalid UTF-8 and
// trailing data. Unknown fields are skipped, so newer producers can add
// fields. A missing or null quantity defaults to 1.
//
// When the input is not valid JSON the reason is always invalid_json, even if
// a type error comes first in the input.
func Decode(data []byte, e *Event) *ValidationError {
	err := decode(data, e)
	if err != nil && err.Reason != ReasonInvalidJSON && !json.Valid(data) {
		// Cold path: report the syntax error, which is what the event is.
		var raw json.RawMessage
		if serr, ok := json.Unmarshal(data, &raw).(*json.SyntaxError); ok {
			return invalid(ReasonInvalidJSON, "", "%s at offset %d", serr.Error(), serr.Offset)
		}
		return invalid(ReasonInvalidJSON, "", "not valid JSON")
	}
	return err
}

func decode(data []byte, e *Event) *ValidationError {
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
	b       []byte
	i       int
	depth   int
	wasNull bool // set by num: the value was null
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
		e.Kind, err = d.strInterned("kind", true)
		return fKind, err
	case "time":
		return fTime, d.time(e)
	case "quantity":
		e.Quantity, err = d.num("quantity", ReasonBadQuantity)
		if d.wasNull {
			e.Quantity = 1
		}
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
		e.LatencyMs, err = d.num("latency_ms", ReasonBadField)
		return fLatency, err
	case "status_code":
		e.StatusCode, err = d.status()
		return fStatus, err
	case "error":
		e.Error, err = d.boolean("error")
		return fError, err
	case "attrs":
		e.Attrs, err = d.attrs()
		return fAttrs, err
	}
	if name, ok := foldsToField(key); ok {
		// encoding/json matches field names case-insensitively, so another
		// reader would take this key as the field: refuse the ambiguity.
		return 0, invalid(ReasonBadField, quoteField(key), "field name differs from %q only in case", name)
	}
	return 0, d.skip()
}

// fieldNames are the v1 field names, and foldedNames the same names folded
// the way encoding/json folds keys (ASCII upper case).
var (
	fieldNames  = [...]string{"id", "tenant_id", "kind", "time", "quantity", "service", "route", "user_id", "latency_ms", "status_code", "error", "attrs"}
	foldedNames = [...]string{"ID", "TENANT_ID", "KIND", "TIME", "QUANTITY", "SERVICE", "ROUTE", "USER_ID", "LATENCY_MS", "STATUS_CODE", "ERROR", "ATTRS"}
)

// foldsToField reports whether key folds, as encoding/json folds it (ASCII
// upper case, and the smallest rune of its case-fold orbit for the rest, so
// "ſervice" and "\u212aind" with a Kelvin sign count), to a v1 field name.
func foldsToField(key []byte) (string, bool) {
	var buf [16]byte
	f := buf[:0]
	for i := 0; i < len(key); {
		if len(f) > len("STATUS_CODE") {
			return "", false
		}
		c := key[i]
		if c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			f = append(f, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(key[i:])
		f = utf8.AppendRune(f, foldRune(r))
		i += n
	}
	for j, name := range foldedNames {
		if string(f) == name {
			return fieldNames[j], true
		}
	}
	return "", false
}

// foldRune returns the smallest rune of r's case-fold orbit, as
// encoding/json does.
func foldRune(r rune) rune {
	for {
		r2 := unicode.SimpleFold(r)
		if r2 <= r {
			return r2
		}
		r = r2
	}
}

// time decodes the time field exactly as time.Time.UnmarshalJSON does (the
// raw bytes between the quotes, no unescaping), and then insists on the
// RFC 3339 shape, which the standard library does not fully check.
func (d *decoder) time(e *Event) *ValidationError {
	if d.null() {
		return nil
	}
	if d.peek() != '"' {
		if err := d.skip(); err != nil {
			return err
		}
		return invalid(ReasonWrongType, "time", "must be an RFC 3339 string")
	}
	raw, escaped, msg := d.scanString()
	if msg != "" {
		return d.syntax(msg + " in time")
	}
	if escaped || !rfc3339Shape(raw) || e.Time.UnmarshalText(raw) != nil {
		return invalid(ReasonBadTime, "time", "%q is not RFC 3339 (like 2026-11-25T19:00:00.123Z)", truncate(string(raw)))
	}
	return nil
}

// rfc3339Shape checks date-time of RFC 3339 section 5.6 by shape:
// YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM), upper-case T and Z as Go's parser
// wants. Date and time ranges are left to time.Parse.
func rfc3339Shape(b []byte) bool {
	const base = len("2006-01-02T15:04:05")
	if len(b) < base+1 {
		return false
	}
	for i, c := range b[:base] {
		switch i {
		case 4, 7:
			if c != '-' {
				return false
			}
		case 10:
			if c != 'T' {
				return false
			}
		case 13, 16:
			if c != ':' {
				return false
			}
		default:
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	rest := b[base:]
	if rest[0] == '.' {
		n := 1
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		if n == 1 {
			return false
		}
		rest = rest[n:]
	}
	switch {
	case len(rest) == 1 && rest[0] == 'Z':
		return true
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		for _, i := range [...]int{1, 2, 4, 5} {
			if rest[i] < '0' || rest[i] > '9' {
				return false
			}
		}
		return (rest[1]-'0')*10+(rest[2]-'0') < 24 && (rest[4]-'0')*10+(rest[5]-'0') < 60
	}
	return false
}

// truncate shortens user data for an error detail, on a rune boundary.
func truncate(s string) string {
	if len(s) <= 40 {
		return s
	}
	n := 40
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// quoteField renders a user-chosen key for the Field of an error, which ends
// up in a NATS header: plain keys stay as they are, others are quoted ASCII.
func quoteField(key []byte) string {
	plain := len(key) > 0 && len(key) <= 40
	for _, c := range key {
		if !alnum(c) && c != '_' && c != '-' {
			plain = false
			break
		}
	}
	if plain {
		return string(key)
	}
	return strconv.QuoteToASCII(truncate(string(key)))
}

func (d *decoder) null() bool {
	if len(d.b)-d.i >= 4 && string(d.b[d.i:d.i+4]) == "null" {
		d.i += 4
		return true
	}
	return false
}

// scanString passes over a JSON string at d.i and returns the bytes between
// the quotes as they appear in the input, and whether they hold escapes. msg
// is not empty on a syntax error: a control character, a bad escape, invalid
// UTF-8 or a missing closing quote.
func (d *decoder) scanString() (raw []byte, escaped bool, msg string) {
	if !d.eat('"') {
		return nil, false, "expected a string"
	}
	start := d.i
	var high byte // OR of every byte: checks UTF-8 only when one is >= 0x80
	for d.i < len(d.b) {
		c := d.b[d.i]
		high |= c
		switch {
		case c == '"':
			raw = d.b[start:d.i]
			d.i++
			if high >= utf8.RuneSelf && !utf8.Valid(raw) {
				return nil, false, "invalid UTF-8"
			}
			return raw, escaped, ""
		case c == '\\':
			escaped = true
			if d.i+1 >= len(d.b) {
				return nil, false, "unterminated string"
			}
			switch d.b[d.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				d.i += 2
			case 'u':
				if len(d.b)-d.i < 6 || !isHex(d.b[d.i+2]) || !isHex(d.b[d.i+3]) || !isHex(d.b[d.i+4]) || !isHex(d.b[d.i+5]) {
					return nil, false, "bad \\u escape"
				}
				d.i += 6
			default:
				return nil, false, "bad escape"
			}
		case c < 0x20:
			return nil, false, "control character in string"
		default:
			d.i++
		}
	}
	return nil, false, "unterminated string"
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// rawString scans a JSON string and returns its value: the input bytes when
// it holds no escapes, else a fresh unescaped copy. ok is false on a syntax
// error.
func (d *decoder) rawString() ([]byte, bool) {
	start := d.i
	raw, escaped, msg := d.scanString()
	if msg != "" {
		return nil, false
	}
	if !escaped {
		return raw, true
	}
	// The grammar was checked above; this cold path only unescapes, the
	// same way encoding/json does (a lone surrogate becomes U+FFFD).
	var s string
	if json.Unmarshal(d.b[start:d.i], &s) != nil {
		return nil, false
	}
	return []byte(s), true
}

func (d *decoder) str(field string) (string, *ValidationError) {
	return d.strInterned(field, false)
}

// strInterned decodes a string; with intern, a built-in kind name is
// returned without allocating.
func (d *decoder) strInterned(field string, intern bool) (string, *ValidationError) {
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
	if intern {
		if k, ok := internedKinds[string(raw)]; ok {
			return k, nil
		}
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

// wrongTypeStart reports whether c starts a JSON value that is not a number
// (null aside, which callers handle first).
func wrongTypeStart(c byte) bool {
	return c == '"' || c == 't' || c == 'f' || c == '{' || c == '['
}

// num decodes a JSON number (or null, reported through d.wasNull) into a
// float64. A number too large for a float64 is rejected with reason r, as
// encoding/json rejects it.
func (d *decoder) num(field string, r Reason) (float64, *ValidationError) {
	d.wasNull = d.null()
	if d.wasNull {
		return 0, nil
	}
	if wrongTypeStart(d.peek()) {
		if err := d.skip(); err != nil {
			return 0, err
		}
		return 0, invalid(ReasonWrongType, field, "must be a number")
	}
	raw, ok := d.scanNumber()
	if !ok {
		return 0, d.syntax("bad number in " + field)
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		// Only overflow reaches here: the grammar was checked above.
		return 0, invalid(r, field, "number %s out of range", truncate(string(raw)))
	}
	return f, nil
}

// status decodes status_code: an integer, as encoding/json demands for an
// int field (no fraction, no exponent), from 0 to 999.
func (d *decoder) status() (int, *ValidationError) {
	if d.null() {
		return 0, nil
	}
	if wrongTypeStart(d.peek()) {
		if err := d.skip(); err != nil {
			return 0, err
		}
		return 0, invalid(ReasonWrongType, "status_code", "must be a number")
	}
	raw, ok := d.scanNumber()
	if !ok {
		return 0, d.syntax("bad number in status_code")
	}
	digits := raw
	if digits[0] == '-' {
		digits = digits[1:]
	}
	n := 0
	for _, c := range digits {
		if c < '0' || c > '9' || n > 999 {
			return 0, invalid(ReasonBadField, "status_code", "%s is not an integer from 0 to 999", truncate(string(raw)))
		}
		n = n*10 + int(c-'0')
	}
	if n > 999 || (n != 0 && raw[0] == '-') {
		return 0, invalid(ReasonBadField, "status_code", "%s is not an integer from 0 to 999", truncate(string(raw)))
	}
	return n, nil
}

// scanNumber passes over a number with the JSON grammar
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? and returns its bytes.
func (d *decoder) scanNumber() ([]byte, bool) {
	start := d.i
	d.eat('-')
	if d.eat('0') {
		// a leading zero stands alone
	} else if c := d.peek(); c >= '1' && c <= '9' {
		d.digits()
	} else {
		return nil, false
	}
	if d.eat('.') {
		if n := d.digits(); n == 0 {
			return nil, false
		}
	}
	if c := d.peek(); c == 'e' || c == 'E' {
		d.i++
		if c := d.peek(); c == '+' || c == '-' {
			d.i++
		}
		if n := d.digits(); n == 0 {
			return nil, false
		}
	}
	return d.b[start:d.i], true
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
			return nil, invalid(ReasonBadAttrs, "attrs."+quoteField(k), "value must be a string")
		}
		v, ok := d.rawString()
		if !ok {
			return nil, d.syntax("bad attrs value")
		}
		if _, dup := m[string(k)]; dup {
			return nil, invalid(ReasonInvalidJSON, "attrs."+quoteField(k), "duplicate key")
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

// skip passes over any JSON value, checking its syntax but not converting
// it (an unknown field may hold a number no float64 can hold). Nesting is
// bounded by maxDepth.
func (d *decoder) skip() *ValidationError {
	switch c := d.peek(); {
	case c == '"':
		if _, _, msg := d.scanString(); msg != "" {
			return d.syntax(msg)
		}
	case c == '{' || c == '[':
		if d.depth++; d.depth > maxDepth {
			return d.syntax("values nested too deep")
		}
		defer func() { d.depth-- }()
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
				if _, _, msg := d.scanString(); msg != "" {
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
		for _, lit := range [...]string{"true", "false", "null"} {
			if len(d.b)-d.i >= len(lit) && string(d.b[d.i:d.i+len(lit)]) == lit {
				d.i += len(lit)
				return nil
			}
		}
		return d.syntax("bad literal")
	default:
		if _, ok := d.scanNumber(); !ok {
			return d.syntax("bad value")
		}
	}
	return nil
}
