package event

import (
	"encoding/json"
	"maps"
	"math"
	"strings"
	"testing"
)

// sameEvent reports whether a and b hold the same values: times compare with
// Equal, a nil and an empty attrs map are the same, and -0 differs from 0 only
// for quantity and latency where the sign survives a round trip.
func sameEvent(a, b *Event) bool {
	return a.ID == b.ID && a.TenantID == b.TenantID && a.Kind == b.Kind &&
		a.Time.Equal(b.Time) && sameFloat(a.Quantity, b.Quantity) &&
		a.Service == b.Service && a.Route == b.Route && a.UserID == b.UserID &&
		sameFloat(a.LatencyMs, b.LatencyMs) && a.StatusCode == b.StatusCode &&
		a.Error == b.Error && maps.Equal(a.Attrs, b.Attrs)
}

func sameFloat(a, b float64) bool {
	return a == b || (math.IsNaN(a) && math.IsNaN(b))
}

// stdlibDecode decodes data with encoding/json the way Decode defines an
// event: quantity starts at 1.
func stdlibDecode(data []byte) (Event, error) {
	e := Event{Quantity: 1}
	err := json.Unmarshal(data, &e)
	return e, err
}

type decodeCase struct {
	name string
	data string
	want Reason // "" means Decode accepts
	// check, when set, inspects an accepted event.
	check func(t *testing.T, e *Event)
}

func runDecodeCases(t *testing.T, cases []decodeCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var e Event
			err := Decode([]byte(tc.data), &e)
			if got := reasonOf(err); got != tc.want {
				t.Fatalf("Decode(%.100q): got %q (%v), want %q", tc.data, got, err, tc.want)
			}
			if err != nil {
				return
			}
			if tc.check != nil {
				tc.check(t, &e)
			}
			// Whatever Decode accepts, encoding/json reads the same way.
			std, serr := stdlibDecode([]byte(tc.data))
			if serr != nil {
				t.Fatalf("encoding/json rejects what Decode accepts: %v", serr)
			}
			if !sameEvent(&e, &std) {
				t.Fatalf("Decode and encoding/json differ:\n got %+v\nwant %+v", e, std)
			}
		})
	}
}

func TestDecodeEscapes(t *testing.T) {
	id := func(want string) func(*testing.T, *Event) { return wantID(want) }
	runDecodeCases(t, []decodeCase{
		{name: `\u0041`, data: `{"id":"\u0041"}`, check: id("A")},
		{name: "surrogate pair", data: `{"id":"\ud83d\ude00"}`, check: id("😀")},
		{name: "lone high surrogate becomes U+FFFD", data: `{"id":"\ud800x"}`, check: id("\ufffdx")},
		{name: "lone low surrogate becomes U+FFFD", data: `{"id":"\udc00"}`, check: id("\ufffd")},
		{name: "short escapes", data: `{"id":"\"\\\/\b\f\n\r\t"}`, check: id("\"\\/\b\f\n\r\t")},
		{name: "upper-case hex", data: `{"id":"\u00E9"}`, check: id("é")},
		{name: "NUL", data: `{"id":"a\u0000b"}`, check: id("a\x00b")},
		{name: "raw UTF-8", data: `{"id":"日本語"}`, check: id("日本語")},
		{name: "escaped key", data: `{"\u0069d":"x"}`, check: id("x")},
		{name: "bad escape", data: `{"id":"\x41"}`, want: ReasonInvalidJSON},
		{name: "short \\u", data: `{"id":"\u41"}`, want: ReasonInvalidJSON},
		{name: "non-hex \\u", data: `{"id":"\u00g1"}`, want: ReasonInvalidJSON},
		{name: "backslash at end", data: `{"id":"\`, want: ReasonInvalidJSON},
		{name: "escaped quote at end", data: `{"id":"\"`, want: ReasonInvalidJSON},
		{name: "raw newline", data: "{\"id\":\"a\nb\"}", want: ReasonInvalidJSON},
		{name: "raw tab", data: "{\"id\":\"a\tb\"}", want: ReasonInvalidJSON},
		{name: "raw DEL is fine", data: "{\"id\":\"a\x7fb\"}", check: id("a\x7fb")},
	})
}

func TestDecodeUTF8(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{name: "invalid byte in id", data: "{\"id\":\"a\xffb\"}", want: ReasonInvalidJSON},
		{name: "invalid byte with escape", data: "{\"id\":\"\\n\xff\"}", want: ReasonInvalidJSON},
		{name: "truncated rune", data: "{\"id\":\"\xe6\x97\"}", want: ReasonInvalidJSON},
		{name: "overlong encoding", data: "{\"id\":\"\xc0\xaf\"}", want: ReasonInvalidJSON},
		{name: "encoded surrogate", data: "{\"id\":\"\xed\xa0\x80\"}", want: ReasonInvalidJSON},
		{name: "invalid in key", data: "{\"\xff\":1}", want: ReasonInvalidJSON},
		{name: "invalid in unknown value", data: "{\"x\":\"\xff\"}", want: ReasonInvalidJSON},
		{name: "invalid in attrs value", data: "{\"attrs\":{\"a\":\"\xff\"}}", want: ReasonInvalidJSON},
		{name: "BOM", data: "\xef\xbb\xbf{}", want: ReasonInvalidJSON},
	})
}

func TestDecodeStructure(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{name: "empty object", data: `{}`, check: wantQuantity(1)},
		{name: "whitespace everywhere", data: " \t\r\n{ \"id\" : \"x\" , \"quantity\" :\n2 } \n", check: wantQuantity(2)},
		{name: "empty input", data: ``, want: ReasonInvalidJSON},
		{name: "only whitespace", data: "  \n", want: ReasonInvalidJSON},
		{name: "null", data: `null`, want: ReasonInvalidJSON},
		{name: "array", data: `[{"id":"x"}]`, want: ReasonInvalidJSON},
		{name: "string", data: `"id"`, want: ReasonInvalidJSON},
		{name: "number", data: `1`, want: ReasonInvalidJSON},
		{name: "truncated", data: `{"id":"x"`, want: ReasonInvalidJSON},
		{name: "truncated after comma", data: `{"id":"x",`, want: ReasonInvalidJSON},
		{name: "trailing comma", data: `{"id":"x",}`, want: ReasonInvalidJSON},
		{name: "missing colon", data: `{"id" "x"}`, want: ReasonInvalidJSON},
		{name: "missing comma", data: `{"id":"x" "kind":"y"}`, want: ReasonInvalidJSON},
		{name: "unquoted key", data: `{id:"x"}`, want: ReasonInvalidJSON},
		{name: "single quotes", data: `{'id':'x'}`, want: ReasonInvalidJSON},
		{name: "comment", data: `{"id":"x" /* c */}`, want: ReasonInvalidJSON},
		{name: "trailing data", data: `{"id":"x"}x`, want: ReasonInvalidJSON},
		{name: "two objects", data: `{"id":"x"}{"id":"y"}`, want: ReasonInvalidJSON},
		{name: "two objects NDJSON", data: "{\"id\":\"x\"}\n{\"id\":\"y\"}\n", want: ReasonInvalidJSON},
		{name: "trailing NUL", data: "{\"id\":\"x\"}\x00", want: ReasonInvalidJSON},
		// A type error early must not hide that the whole input is not JSON.
		{name: "type error then garbage", data: `{"id":5,"x":}`, want: ReasonInvalidJSON},
		{name: "bad time then garbage", data: `{"time":"yesterday"`, want: ReasonInvalidJSON},
		{name: "attrs error then trailing data", data: `{"attrs":{"a":1}} x`, want: ReasonInvalidJSON},
	})
}

func TestDecodeDuplicatesAndCase(t *testing.T) {
	runDecodeCases(t, []decodeCase{
		{name: "id twice", data: `{"id":"a","id":"b"}`, want: ReasonInvalidJSON},
		{name: "tenant_id twice, same value", data: `{"tenant_id":"a","tenant_id":"a"}`, want: ReasonInvalidJSON},
		{name: "tenant_id twice via escape", data: `{"tenant_id":"a","tenant\u005fid":"b"}`, want: ReasonInvalidJSON},
		{name: "null then value", data: `{"quantity":null,"quantity":5}`, want: ReasonInvalidJSON},
		{name: "attrs twice", data: `{"attrs":{},"attrs":{}}`, want: ReasonInvalidJSON},
		{name: "unknown twice is fine", data: `{"x":1,"x":2}`},
		// encoding/json folds key case: another reader would take these as the field.
		{name: "ID", data: `{"ID":"a"}`, want: ReasonBadField},
		{name: "Tenant_Id", data: `{"tenant_id":"a","Tenant_Id":"b"}`, want: ReasonBadField},
		{name: "long s folds to S", data: `{"ſervice":"x"}`, want: ReasonBadField},
		{name: "Kelvin sign folds to K", data: `{"\u212aind":"x"}`, want: ReasonBadField},
		{name: "Kelvin sign raw", data: `{"Kind":"x"}`, want: ReasonBadField},
		{name: "dotless i does not fold", data: `{"ıd":"x"}`},
		{name: "near miss", data: `{"tenantid":"x","ids":"y"}`},
	})
}

func TestDecodeUnknownFields(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	runDecodeCases(t, []decodeCase{
		{name: "scalar", data: `{"id":"x","v2_field":"y","n":1.5e3,"b":true,"f":false,"z":null}`, check: wantID("x")},
		{name: "nested", data: `{"extra":{"a":[1,{"b":[]},"c",null,{}],"d":{"e":{"f":-0.0e+1}}},"id":"x"}`, check: wantID("x")},
		{name: "huge number is not parsed", data: `{"extra":1e999,"id":"x"}`, check: wantID("x")},
		{name: "escapes are checked", data: `{"extra":"\q"}`, want: ReasonInvalidJSON},
		{name: "bad number", data: `{"extra":1.}`, want: ReasonInvalidJSON},
		{name: "bad literal", data: `{"extra":nul}`, want: ReasonInvalidJSON},
		{name: "unterminated array", data: `{"extra":[1,2}`, want: ReasonInvalidJSON},
		{name: "array missing comma", data: `{"extra":[1 2]}`, want: ReasonInvalidJSON},
		{name: "object missing value", data: `{"extra":{"a"}}`, want: ReasonInvalidJSON},
		{name: "64 levels", data: `{"extra":` + deep(64) + `}`},
		{name: "65 levels", data: `{"extra":` + deep(65) + `}`, want: ReasonInvalidJSON},
		{name: "100k levels", data: `{"extra":` + deep(100000) + `}`, want: ReasonInvalidJSON},
	})
}

func TestDecodeReplacesContents(t *testing.T) {
	e := Event{ID: "old", Service: "old", Attrs: map[string]string{"old": "x"}, Error: true, Quantity: 9}
	if err := Decode([]byte(`{"id":"new"}`), &e); err != nil {
		t.Fatal(err)
	}
	want := Event{ID: "new", Quantity: 1}
	if !sameEvent(&e, &want) {
		t.Fatalf("got %+v, want %+v", e, want)
	}
}

func TestDecodeKindIsInterned(t *testing.T) {
	var a, b Event
	if Decode([]byte(`{"kind":"api_request"}`), &a) != nil || Decode([]byte(`{"kind":"api_request"}`), &b) != nil {
		t.Fatal("Decode failed")
	}
	if a.Kind != KindAPIRequest || b.Kind != KindAPIRequest {
		t.Fatalf("kind: got %q and %q", a.Kind, b.Kind)
	}
}

func TestDecodeAllocs(t *testing.T) {
	data := benchEvent()
	var e Event
	allocs := testing.AllocsPerRun(100, func() {
		if err := Decode(data, &e); err != nil {
			t.Fatal(err)
		}
	})
	// One string each for id, tenant_id, service, route and user_id; a
	// built-in kind and the time cost nothing.
	if allocs > 5 {
		t.Fatalf("Decode allocations: got %v, want <= 5", allocs)
	}
}
