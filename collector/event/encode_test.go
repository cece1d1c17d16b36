package event

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func roundTripEvents() []Event {
	base := Event{
		ID: "01JDX3ZP0000000000000000AB", TenantID: "acme", Kind: KindAPIRequest,
		Time:     time.Date(2026, 11, 25, 18, 59, 0, 123e6, time.UTC),
		Quantity: 1, Service: "invoices-api", Route: "GET /v1/invoices", UserID: "u_42",
		LatencyMs: 12.5, StatusCode: 200, Attrs: map[string]string{"model": "gpt-4o", "region": "eu"},
	}
	minimal := Event{ID: "x", TenantID: "t", Kind: "custom_kind", Time: time.Unix(0, 0).UTC()}
	odd := base
	odd.ID = "quote\" backslash\\ ctrl\x01\x1f nl\n tab\t <html>&amp; \u2028\u2029 é 😀"
	odd.Route = "\x00"
	odd.Attrs = map[string]string{"": "", "k\"ey": "v\\al", "ü": "☃"}
	odd.Quantity = 0
	odd.Error = true
	odd.LatencyMs = 1e-7
	odd.StatusCode = 999
	big := base
	big.Quantity = math.MaxFloat64
	big.LatencyMs = 5e21
	tiny := base
	tiny.Quantity = math.SmallestNonzeroFloat64
	negZero := base
	negZero.Quantity = math.Copysign(0, -1)
	zoned := base
	zoned.Time = time.Date(2026, 11, 25, 23, 59, 59, 999999999, time.FixedZone("X", 5*3600+30*60))
	return []Event{base, minimal, odd, big, tiny, negZero, zoned}
}

// atMillis is what the wire keeps of t: UTC, truncated to the millisecond.
func atMillis(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }

func TestAppendJSONRoundTrip(t *testing.T) {
	for i, in := range roundTripEvents() {
		data := AppendJSON(nil, &in)
		var out Event
		if err := Decode(data, &out); err != nil {
			t.Fatalf("#%d: Decode(AppendJSON) = %v\n%s", i, err, data)
		}
		want := in
		want.Time = atMillis(in.Time)
		if !sameEvent(&out, &want) {
			t.Errorf("#%d: round trip:\n got %+v\nwant %+v\njson %s", i, out, want, data)
		}
		if out.Time.Location() != time.UTC {
			t.Errorf("#%d: time location: got %v, want UTC", i, out.Time.Location())
		}
		if math.Signbit(out.Quantity) != math.Signbit(in.Quantity) {
			t.Errorf("#%d: quantity sign lost: got %v, want %v", i, out.Quantity, in.Quantity)
		}
	}
}

func TestAppendJSONTimeFormat(t *testing.T) {
	e := Event{ID: "x", TenantID: "t", Kind: "k", Time: time.Date(2026, 11, 25, 20, 0, 0, 5e8+123456, time.FixedZone("", 3600))}
	data := string(AppendJSON(nil, &e))
	if want := `"time":"2026-11-25T19:00:00.500Z"`; !strings.Contains(data, want) {
		t.Fatalf("got %s, want it to contain %s", data, want)
	}
}

func TestAppendJSONAppends(t *testing.T) {
	e := roundTripEvents()[0]
	prefix := []byte("prefix:")
	got := AppendJSON(prefix, &e)
	if !strings.HasPrefix(string(got), "prefix:{") {
		t.Fatalf("got %q, want it to start with the prefix", got)
	}
}

// TestAppendJSONMatchesStdlib checks that AppendJSON writes what
// encoding/json writes, semantically: both parse to the same generic value.
func TestAppendJSONMatchesStdlib(t *testing.T) {
	for i, in := range roundTripEvents() {
		in.Time = atMillis(in.Time) // encoding/json keeps nanoseconds
		ours := AppendJSON(nil, &in)
		std, err := json.Marshal(&in)
		if err != nil {
			t.Fatalf("#%d: json.Marshal: %v", i, err)
		}
		if !json.Valid(ours) {
			t.Fatalf("#%d: AppendJSON wrote invalid JSON: %s", i, ours)
		}
		var a, b map[string]any
		if err := json.Unmarshal(ours, &a); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(std, &b); err != nil {
			t.Fatal(err)
		}
		// Times compare as instants: encoding/json trims trailing zeros.
		for _, m := range []map[string]any{a, b} {
			ts, err := time.Parse(time.RFC3339Nano, m["time"].(string))
			if err != nil {
				t.Fatalf("#%d: time: %v", i, err)
			}
			m["time"] = ts.UnixNano()
		}
		if !jsonEqual(a, b) {
			t.Errorf("#%d: AppendJSON and encoding/json differ:\n ours %s\n  std %s", i, ours, std)
		}
	}
}

func TestAppendJSONInvalidUTF8(t *testing.T) {
	e := Event{ID: "a\xffb", TenantID: "t", Kind: "k", Time: testNow, Attrs: map[string]string{"\xfe": "\xc0"}}
	data := AppendJSON(nil, &e)
	std, _ := json.Marshal(&Event{ID: e.ID, TenantID: "t", Kind: "k", Time: testNow, Attrs: e.Attrs})
	var out, want Event
	if err := Decode(data, &out); err != nil {
		t.Fatalf("Decode: %v (%s)", err, data)
	}
	if err := json.Unmarshal(std, &want); err != nil {
		t.Fatal(err)
	}
	if out.ID != "a\ufffdb" || !sameEvent(&out, &want) {
		t.Fatalf("got %+v, want %+v", out, want)
	}
}

func jsonEqual(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, v := range a {
			if w, ok := b[k]; !ok || !jsonEqual(v, w) {
				return false
			}
		}
		return true
	case float64:
		b, ok := b.(float64)
		return ok && a == b && math.Signbit(a) == math.Signbit(b)
	default:
		return a == b
	}
}

func TestMilli(t *testing.T) {
	ts := time.Date(2026, 1, 1, 0, 0, 0, 999999999, time.UTC)
	if got := Milli(ts); got != 999 {
		t.Fatalf("Milli: got %d, want 999", got)
	}
	if got := Milli(ts.Truncate(time.Second)); got != 0 {
		t.Fatalf("Milli: got %d, want 0", got)
	}
}
