package event

import (
	"encoding/json"
	"math"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzDecode is a differential fuzz test against encoding/json. Decode must
// never panic; what it accepts, encoding/json must accept with the same field
// values; what encoding/json finds syntactically invalid, Decode must reject
// as invalid_json. The seed corpus is in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add(body())
	f.Add([]byte(`{"id":"x","tenant_id":"acme","kind":"api_request","time":"2026-11-25T19:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var e Event
		err := Decode(data, &e)
		std, serr := stdlibDecode(data)
		var syn *json.SyntaxError
		if !json.Valid(data) {
			if err == nil || err.Reason != ReasonInvalidJSON {
				t.Fatalf("encoding/json finds %q not valid JSON; Decode: got %v, want invalid_json", data, err)
			}
		} else if serr != nil && asSyntax(serr, &syn) {
			t.Fatalf("json.Valid and Unmarshal disagree on %q: %v", data, serr)
		}
		if err != nil {
			if err.Reason == "" || err.Error() == "" {
				t.Fatalf("empty error for %q", data)
			}
			if !utf8.ValidString(err.Error()) {
				t.Fatalf("error text is not UTF-8: %q", err.Error())
			}
			return
		}
		if serr != nil {
			t.Fatalf("Decode accepts %q, encoding/json does not: %v", data, serr)
		}
		if !sameEvent(&e, &std) {
			t.Fatalf("Decode and encoding/json differ on %q:\n got %+v\nwant %+v", data, e, std)
		}
		if math.Signbit(e.Quantity) != math.Signbit(std.Quantity) {
			t.Fatalf("quantity sign differs on %q", data)
		}
		// Every string Decode keeps is valid UTF-8.
		for _, s := range []string{e.ID, e.TenantID, e.Kind, e.Service, e.Route, e.UserID} {
			if !utf8.ValidString(s) {
				t.Fatalf("Decode kept invalid UTF-8 %q from %q", s, data)
			}
		}
		// An accepted event survives AppendJSON and Decode again, when its
		// time can be written (years 0 to 9999).
		if y := e.Time.Year(); y >= 0 && y <= 9999 && !math.IsInf(e.Quantity, 0) {
			var again Event
			enc := AppendJSON(nil, &e)
			if err := Decode(enc, &again); err != nil {
				t.Fatalf("Decode(AppendJSON(Decode(%q))) = %v\n%s", data, err, enc)
			}
			want := e
			want.Time = atMillis(e.Time)
			if e.Time.IsZero() {
				want.Time = e.Time
			}
			if !sameEvent(&again, &want) {
				t.Fatalf("re-encoding changed the event:\n got %+v\nwant %+v", again, want)
			}
		}
	})
}

func asSyntax(err error, target **json.SyntaxError) bool {
	s, ok := err.(*json.SyntaxError)
	*target = s
	return ok
}

// FuzzRoundTrip builds an event from fuzzed fields, encodes it with
// AppendJSON and decodes it: the result must equal the input (time at
// millisecond precision in UTC, invalid UTF-8 replaced as encoding/json does),
// and a valid event must stay valid.
func FuzzRoundTrip(f *testing.F) {
	f.Add("01JDX3ZP", "acme", "api_request", int64(1795633140123), 1.0, "svc", "GET /x", "u_1", 12.5, 200, false, "model", "gpt-4o")
	f.Add("", "", "", int64(0), 0.0, "", "", "", 0.0, 0, true, "", "")
	f.Add("\"\\\x00\x1f\u2028", "a-b_c", "gpu_minutes", int64(-1), math.MaxFloat64, "\xff", "<>&", "é", 1e-300, 999, true, "\xfe", "\u00e9")
	f.Fuzz(func(t *testing.T, id, tenant, kind string, ms int64, qty float64, service, route, user string, latency float64, status int, isErr bool, ak, av string) {
		if math.IsNaN(qty) || math.IsInf(qty, 0) || math.IsNaN(latency) || math.IsInf(latency, 0) {
			t.Skip("NaN and Inf have no JSON form; Validate rejects them before encoding")
		}
		ts := time.UnixMilli(ms % (253402300799000)).UTC() // stay within years 1970±7999
		if ts.Year() < 0 {
			t.Skip("years before 0 have no RFC 3339 form")
		}
		in := Event{ID: id, TenantID: tenant, Kind: kind, Time: ts, Quantity: qty, Service: service,
			Route: route, UserID: user, LatencyMs: latency, StatusCode: status % 1000, Error: isErr}
		if in.StatusCode < 0 {
			in.StatusCode = -in.StatusCode
		}
		if ak != "" || av != "" {
			in.Attrs = map[string]string{ak: av}
		}
		data := AppendJSON(nil, &in)
		var out Event
		if err := Decode(data, &out); err != nil {
			t.Fatalf("Decode(AppendJSON(%+v)) = %v\n%s", in, err, data)
		}
		want := in
		want.ID, want.TenantID, want.Kind = fixUTF8(id), fixUTF8(tenant), fixUTF8(kind)
		want.Service, want.Route, want.UserID = fixUTF8(service), fixUTF8(route), fixUTF8(user)
		if in.Attrs != nil {
			want.Attrs = map[string]string{fixUTF8(ak): fixUTF8(av)}
		}
		if !sameEvent(&out, &want) {
			t.Fatalf("round trip:\n got %+v\nwant %+v\njson %s", out, want, data)
		}
		if !json.Valid(data) {
			t.Fatalf("AppendJSON wrote invalid JSON: %s", data)
		}
		// Valid before encoding means valid after decoding, with the same subject.
		v := newTestValidator(t, func(r *Rules) { r.Now = func() time.Time { return ts } })
		if v.Validate(&in, "") == nil {
			if err := v.Parse(data, Subject(in.TenantID, in.Kind), &out); err != nil && err.Reason != ReasonTooLarge {
				t.Fatalf("valid event invalid after round trip: %v\n%s", err, data)
			}
		}
	})
}

// fixUTF8 replaces each invalid byte with U+FFFD, as encoding/json and
// AppendJSON do.
func fixUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	b := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, "\ufffd"...)
		} else {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return string(b)
}
