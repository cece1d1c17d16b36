package event

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

type parseCase struct {
	name    string
	data    []byte
	subject string // testSubject when empty; "none" skips the subject check
	want    Reason // "" means the event is valid
	field   string // when not empty, the Field the error must name
	check   func(t *testing.T, e *Event)
}

// runParseCases runs each case through Validator.Parse with the fixed clock.
func runParseCases(t *testing.T, v *Validator, cases []parseCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			subject := tc.subject
			switch subject {
			case "":
				subject = testSubject
			case "none":
				subject = ""
			}
			var e Event
			err := v.Parse(tc.data, subject, &e)
			if got := reasonOf(err); got != tc.want {
				t.Fatalf("Parse(%.120s) reason: got %q (%v), want %q", tc.data, got, err, tc.want)
			}
			if tc.field != "" && err.Field != tc.field {
				t.Errorf("field: got %q, want %q (%v)", err.Field, tc.field, err)
			}
			if tc.check != nil && err == nil {
				tc.check(t, &e)
			}
		})
	}
}

func wantQuantity(q float64) func(*testing.T, *Event) {
	return func(t *testing.T, e *Event) {
		t.Helper()
		if e.Quantity != q || math.Signbit(e.Quantity) != math.Signbit(q) {
			t.Errorf("quantity: got %v, want %v", e.Quantity, q)
		}
	}
}

func wantTenant(s string) func(*testing.T, *Event) {
	return func(t *testing.T, e *Event) {
		t.Helper()
		if e.TenantID != s {
			t.Errorf("tenant_id: got %q, want %q", e.TenantID, s)
		}
	}
}

func wantID(s string) func(*testing.T, *Event) {
	return func(t *testing.T, e *Event) {
		t.Helper()
		if e.ID != s {
			t.Errorf("id: got %q, want %q", e.ID, s)
		}
	}
}

func wantTime(ts time.Time) func(*testing.T, *Event) {
	return func(t *testing.T, e *Event) {
		t.Helper()
		if !e.Time.Equal(ts) {
			t.Errorf("time: got %v, want %v", e.Time, ts)
		}
	}
}

func attrsJSON(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`"k%02d":"v"`, i)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func TestParseValidBase(t *testing.T) {
	v := newTestValidator(t)
	var e Event
	if err := v.Parse(body(), testSubject, &e); err != nil {
		t.Fatalf("Parse(base): %v", err)
	}
	want := Event{
		ID: "01JDX3ZP0000000000000000AB", TenantID: "acme", Kind: KindAPIRequest,
		Time:     time.Date(2026, 11, 25, 18, 59, 0, 123e6, time.UTC),
		Quantity: 1, Service: "invoices-api", Route: "GET /v1/invoices", UserID: "u_42",
		LatencyMs: 12.5, StatusCode: 200, Attrs: map[string]string{"model": "gpt-4o"},
	}
	if !sameEvent(&e, &want) {
		t.Fatalf("got %+v, want %+v", e, want)
	}
}

func TestParseRequiredFields(t *testing.T) {
	v := newTestValidator(t)
	var cases []parseCase
	for _, f := range []string{"id", "tenant_id", "kind", "time"} {
		cases = append(cases,
			parseCase{name: f + "/absent", data: body(f, "-"), want: ReasonMissingField, field: f},
			parseCase{name: f + "/null", data: body(f, "null"), want: ReasonMissingField, field: f},
		)
		if f != "time" {
			cases = append(cases, parseCase{name: f + "/empty", data: body(f, `""`), want: ReasonMissingField, field: f})
		}
	}
	cases = append(cases,
		parseCase{name: "time/empty", data: body("time", `""`), want: ReasonBadTime, field: "time"},
		parseCase{name: "empty object", data: []byte(`{}`), want: ReasonMissingField, field: "id"},
		parseCase{name: "only optional fields", data: body("id", "-", "tenant_id", "-", "kind", "-", "time", "-"), want: ReasonMissingField},
	)
	runParseCases(t, v, cases)
}

func TestParseID(t *testing.T) {
	v := newTestValidator(t)
	runParseCases(t, v, []parseCase{
		{name: "1 byte", data: body("id", `"x"`), check: wantID("x")},
		{name: "128 bytes", data: body("id", `"`+strings.Repeat("a", 128)+`"`), check: wantID(strings.Repeat("a", 128))},
		{name: "129 bytes", data: body("id", `"`+strings.Repeat("a", 129)+`"`), want: ReasonBadID, field: "id"},
		// 43 × "é" is 86 bytes... 64 of them is 128 bytes, 65 is 130: bytes count, not runes.
		{name: "64 two-byte runes", data: body("id", `"`+strings.Repeat("é", 64)+`"`)},
		{name: "65 two-byte runes", data: body("id", `"`+strings.Repeat("é", 65)+`"`), want: ReasonBadID},
		{name: "escaped length counts decoded bytes", data: body("id", `"`+strings.Repeat(`\u0061`, 128)+`"`), check: wantID(strings.Repeat("a", 128))},
		{name: "number", data: body("id", `42`), want: ReasonWrongType, field: "id"},
		{name: "object", data: body("id", `{"a":"b"}`), want: ReasonWrongType, field: "id"},
	})
}

func TestParseTenantID(t *testing.T) {
	v := newTestValidator(t)
	t64 := strings.Repeat("a", 64)
	bad := map[string]string{
		"dot":             `"acme.prod"`,
		"space":           `"acme corp"`,
		"star":            `"*"`,
		"gt":              `">"`,
		"65 chars":        `"` + strings.Repeat("a", 65) + `"`,
		"sql quote":       `"acme' OR '1'='1"`,
		"sql drop":        `"acme\"; DROP TABLE events; --"`,
		"unicode":         `"acmé"`,
		"leading dash":    `"-acme"`,
		"leading under":   `"_acme"`,
		"slash":           `"acme/prod"`,
		"nul escape":      `"acme\u0000"`,
		"newline escape":  `"acme\nx"`,
		"trailing space":  `"acme "`,
		"fullwidth digit": `"１"`,
	}
	var cases []parseCase
	for name, raw := range bad {
		cases = append(cases, parseCase{name: name, data: body("tenant_id", raw), subject: "none", want: ReasonBadTenantID, field: "tenant_id"})
	}
	cases = append(cases,
		parseCase{name: "empty", data: body("tenant_id", `""`), want: ReasonMissingField, field: "tenant_id"},
		parseCase{name: "number", data: body("tenant_id", `7`), want: ReasonWrongType, field: "tenant_id"},
		parseCase{name: "64 chars", data: body("tenant_id", `"`+t64+`"`), subject: Subject(t64, KindAPIRequest), check: wantTenant(t64)},
		parseCase{name: "1 char", data: body("tenant_id", `"7"`), subject: Subject("7", KindAPIRequest), check: wantTenant("7")},
		parseCase{name: "mixed", data: body("tenant_id", `"Acme-prod_01"`), subject: Subject("Acme-prod_01", KindAPIRequest), check: wantTenant("Acme-prod_01")},
		parseCase{name: "escaped letter", data: body("tenant_id", `"\u0041cme"`), subject: Subject("Acme", KindAPIRequest), check: wantTenant("Acme")},
	)
	runParseCases(t, v, cases)
}

func TestParseKind(t *testing.T) {
	v := newTestValidator(t)
	var cases []parseCase
	for _, k := range BuiltinKinds {
		cases = append(cases, parseCase{name: k, data: body("kind", `"`+k+`"`), subject: Subject("acme", k)})
	}
	cases = append(cases,
		parseCase{name: "custom declared", data: body("kind", `"gpu_minutes"`), subject: Subject("acme", "gpu_minutes")},
		parseCase{name: "custom undeclared", data: body("kind", `"teleport"`), subject: Subject("acme", "teleport"), want: ReasonUnknownKind, field: "kind"},
		parseCase{name: "upper case", data: body("kind", `"API_REQUEST"`), subject: "none", want: ReasonUnknownKind},
		parseCase{name: "dot", data: body("kind", `"api.request"`), subject: "none", want: ReasonUnknownKind},
		parseCase{name: "wildcard", data: body("kind", `">"`), subject: "none", want: ReasonUnknownKind},
		parseCase{name: "number", data: body("kind", `1`), want: ReasonWrongType, field: "kind"},
	)
	runParseCases(t, v, cases)
}

func TestParseQuantity(t *testing.T) {
	v := newTestValidator(t)
	runParseCases(t, v, []parseCase{
		{name: "absent defaults to 1", data: body("quantity", "-"), check: wantQuantity(1)},
		{name: "null defaults to 1", data: body("quantity", "null"), check: wantQuantity(1)},
		{name: "zero", data: body("quantity", "0"), check: wantQuantity(0)},
		{name: "negative zero", data: body("quantity", "-0"), check: wantQuantity(math.Copysign(0, -1))},
		{name: "fraction", data: body("quantity", "2.5"), check: wantQuantity(2.5)},
		{name: "exponent", data: body("quantity", "1.5E3"), check: wantQuantity(1500)},
		{name: "largest exact integer", data: body("quantity", "9007199254740991"), check: wantQuantity(MaxQuantity)},
		{name: "above the largest exact integer", data: body("quantity", "9007199254740992"), want: ReasonBadQuantity, field: "quantity"},
		{name: "largest float", data: body("quantity", "1.7976931348623157e308"), want: ReasonBadQuantity, field: "quantity"},
		{name: "1e308 would sum to infinity", data: body("quantity", "1e308"), want: ReasonBadQuantity, field: "quantity"},
		{name: "underflow is zero", data: body("quantity", "1e-400"), check: wantQuantity(0)},
		{name: "negative", data: body("quantity", "-1"), want: ReasonBadQuantity, field: "quantity"},
		{name: "tiny negative", data: body("quantity", "-1e-300"), want: ReasonBadQuantity, field: "quantity"},
		{name: "huge", data: body("quantity", "1e309"), want: ReasonBadQuantity, field: "quantity"},
		{name: "huge negative", data: body("quantity", "-1e309"), want: ReasonBadQuantity, field: "quantity"},
		{name: "string", data: body("quantity", `"5"`), want: ReasonWrongType, field: "quantity"},
		{name: "bool", data: body("quantity", `true`), want: ReasonWrongType, field: "quantity"},
		{name: "array", data: body("quantity", `[1]`), want: ReasonWrongType, field: "quantity"},
		{name: "object", data: body("quantity", `{"n":1}`), want: ReasonWrongType, field: "quantity"},
		{name: "NaN is not JSON", data: body("quantity", `NaN`), want: ReasonInvalidJSON},
		{name: "Infinity is not JSON", data: body("quantity", `Infinity`), want: ReasonInvalidJSON},
		{name: "-Infinity is not JSON", data: body("quantity", `-Infinity`), want: ReasonInvalidJSON},
		{name: "plus sign", data: body("quantity", `+1`), want: ReasonInvalidJSON},
		{name: "leading zero", data: body("quantity", `01`), want: ReasonInvalidJSON},
		{name: "bare dot", data: body("quantity", `1.`), want: ReasonInvalidJSON},
		{name: "hex", data: body("quantity", `0x10`), want: ReasonInvalidJSON},
		{name: "minus then string", data: body("quantity", `-"1"`), want: ReasonInvalidJSON},
	})
}

func TestValidateNonFiniteQuantity(t *testing.T) {
	// NaN and ±Inf cannot be written in JSON, but an Event built in Go can hold them.
	v := newTestValidator(t)
	for _, q := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), -1, math.MaxFloat64, MaxQuantity + 2} {
		e := Event{ID: "x", TenantID: "acme", Kind: KindAPIRequest, Time: testNow, Quantity: q}
		if got := reasonOf(v.Validate(&e, "")); got != ReasonBadQuantity {
			t.Errorf("Validate(quantity=%v): got %q, want %q", q, got, ReasonBadQuantity)
		}
	}
	for _, l := range []float64{math.NaN(), math.Inf(1), -0.5, 1e308, math.MaxFloat32} {
		e := Event{ID: "x", TenantID: "acme", Kind: KindAPIRequest, Time: testNow, Quantity: 1, LatencyMs: l}
		if got := reasonOf(v.Validate(&e, "")); got != ReasonBadField {
			t.Errorf("Validate(latency_ms=%v): got %q, want %q", l, got, ReasonBadField)
		}
	}
}

func TestParseOptionalFields(t *testing.T) {
	v := newTestValidator(t)
	runParseCases(t, v, []parseCase{
		{name: "all optional absent", data: body("service", "-", "route", "-", "user_id", "-", "latency_ms", "-", "status_code", "-", "error", "-", "attrs", "-")},
		{name: "all optional null", data: body("service", "null", "route", "null", "user_id", "null", "latency_ms", "null", "status_code", "null", "error", "null", "attrs", "null")},
		{name: "service number", data: body("service", `1`), want: ReasonWrongType, field: "service"},
		{name: "route bool", data: body("route", `true`), want: ReasonWrongType, field: "route"},
		{name: "user_id array", data: body("user_id", `["u"]`), want: ReasonWrongType, field: "user_id"},
		{name: "latency string", data: body("latency_ms", `"12"`), want: ReasonWrongType, field: "latency_ms"},
		{name: "latency negative", data: body("latency_ms", `-1`), want: ReasonBadField, field: "latency_ms"},
		{name: "latency huge", data: body("latency_ms", `1e400`), want: ReasonBadField, field: "latency_ms"},
		{name: "latency 1e308 overflows the rollup's Float32", data: body("latency_ms", `1e308`), want: ReasonBadField, field: "latency_ms"},
		{name: "latency at the limit", data: body("latency_ms", `1e9`)},
		{name: "latency just above the limit", data: body("latency_ms", `1000000000.001`), want: ReasonBadField, field: "latency_ms"},
		{name: "status 0", data: body("status_code", `0`)},
		{name: "status -0", data: body("status_code", `-0`)},
		{name: "status 999", data: body("status_code", `999`)},
		{name: "status 1000", data: body("status_code", `1000`), want: ReasonBadField, field: "status_code"},
		{name: "status negative", data: body("status_code", `-1`), want: ReasonBadField, field: "status_code"},
		{name: "status fraction", data: body("status_code", `200.5`), want: ReasonBadField, field: "status_code"},
		{name: "status 200.0", data: body("status_code", `200.0`), want: ReasonBadField, field: "status_code"},
		{name: "status exponent", data: body("status_code", `2e2`), want: ReasonBadField, field: "status_code"},
		{name: "status huge", data: body("status_code", `99999999999999999999999`), want: ReasonBadField, field: "status_code"},
		{name: "status string", data: body("status_code", `"200"`), want: ReasonWrongType, field: "status_code"},
		{name: "error true", data: body("error", `true`), check: func(t *testing.T, e *Event) {
			if !e.Error {
				t.Error("error: got false, want true")
			}
		}},
		{name: "error string", data: body("error", `"true"`), want: ReasonWrongType, field: "error"},
		{name: "error number", data: body("error", `1`), want: ReasonWrongType, field: "error"},
		{name: "error bad literal", data: body("error", `tru`), want: ReasonInvalidJSON},
	})
}

func TestParseAttrs(t *testing.T) {
	v := newTestValidator(t)
	runParseCases(t, v, []parseCase{
		{name: "16 keys", data: body("attrs", attrsJSON(16)), check: func(t *testing.T, e *Event) {
			if len(e.Attrs) != 16 {
				t.Errorf("attrs: got %d keys, want 16", len(e.Attrs))
			}
		}},
		{name: "17 keys", data: body("attrs", attrsJSON(17)), want: ReasonBadAttrs, field: "attrs"},
		{name: "100 keys", data: body("attrs", attrsJSON(100)), want: ReasonBadAttrs, field: "attrs"},
		{name: "empty", data: body("attrs", `{}`)},
		{name: "empty value", data: body("attrs", `{"a":""}`)},
		{name: "unicode", data: body("attrs", `{"modèle":"gpt-4o ✓"}`), check: func(t *testing.T, e *Event) {
			if e.Attrs["modèle"] != "gpt-4o ✓" {
				t.Errorf("attrs: got %v", e.Attrs)
			}
		}},
		{name: "number value", data: body("attrs", `{"tokens":12}`), want: ReasonBadAttrs, field: "attrs.tokens"},
		{name: "bool value", data: body("attrs", `{"cached":true}`), want: ReasonBadAttrs},
		{name: "null value", data: body("attrs", `{"a":null}`), want: ReasonBadAttrs},
		{name: "object value", data: body("attrs", `{"a":{"b":"c"}}`), want: ReasonBadAttrs},
		{name: "odd key is quoted in field", data: body("attrs", `{"a: b\r\n":1}`), want: ReasonBadAttrs, field: `attrs."a: b\r\n"`},
		{name: "array", data: body("attrs", `["a"]`), want: ReasonWrongType, field: "attrs"},
		{name: "string", data: body("attrs", `"a=b"`), want: ReasonWrongType, field: "attrs"},
		{name: "duplicate key", data: body("attrs", `{"a":"1","a":"2"}`), want: ReasonInvalidJSON},
		{name: "duplicate key after escape", data: body("attrs", `{"a":"1","\u0061":"2"}`), want: ReasonInvalidJSON},
		{name: "unterminated", data: body("attrs", `{"a":"1"`), want: ReasonInvalidJSON},
	})
}

func TestValidateAttrsFromGo(t *testing.T) {
	v := newTestValidator(t)
	e := Event{ID: "x", TenantID: "acme", Kind: KindAPIRequest, Time: testNow, Quantity: 1, Attrs: map[string]string{}}
	for i := 0; i <= MaxAttrs; i++ {
		e.Attrs[fmt.Sprint(i)] = "v"
	}
	if got := reasonOf(v.Validate(&e, "")); got != ReasonBadAttrs {
		t.Fatalf("Validate(17 attrs): got %q, want %q", got, ReasonBadAttrs)
	}
}

func TestParseSize(t *testing.T) {
	v := newTestValidator(t)
	pad := func(total int) []byte {
		b := body()
		// Grow the event to total bytes with an unknown field, which is skipped.
		filler := total - len(b) - len(`,"pad":""`)
		return body("pad", `"`+strings.Repeat("x", filler)+`"`)
	}
	exact, over := pad(MaxSize), pad(MaxSize+1)
	if len(exact) != MaxSize || len(over) != MaxSize+1 {
		t.Fatalf("bad padding: %d, %d", len(exact), len(over))
	}
	runParseCases(t, v, []parseCase{
		{name: "exactly 8 KiB", data: exact},
		{name: "8 KiB + 1", data: over, want: ReasonTooLarge},
		{name: "1 MiB of garbage", data: []byte(strings.Repeat("{", 1<<20)), want: ReasonTooLarge},
	})
	// Decode alone does not enforce the size: Parse does.
	var e Event
	if err := Decode(over, &e); err != nil {
		t.Fatalf("Decode(8 KiB + 1): got %v, want nil", err)
	}
}

func TestParseTime(t *testing.T) {
	v := newTestValidator(t)
	short := newTestValidator(t, func(r *Rules) { r.Lateness = time.Hour })
	at := func(ts time.Time) []byte { return body("time", `"`+ts.Format(time.RFC3339Nano)+`"`) }
	runParseCases(t, v, []parseCase{
		{name: "now", data: at(testNow), check: wantTime(testNow)},
		{name: "5 min ahead", data: at(testNow.Add(MaxFuture))},
		{name: "5 min 1 ms ahead", data: at(testNow.Add(MaxFuture + time.Millisecond)), want: ReasonTimeInFuture, field: "time"},
		{name: "year 2999", data: body("time", `"2999-01-01T00:00:00Z"`), want: ReasonTimeInFuture},
		{name: "7 days old", data: at(testNow.Add(-DefaultLateness))},
		{name: "7 days 1 ms old", data: at(testNow.Add(-DefaultLateness - time.Millisecond)), want: ReasonTooLate, field: "time"},
		{name: "year 2000", data: body("time", `"2000-01-01T00:00:00Z"`), want: ReasonTooLate},
		{name: "offset", data: body("time", `"2026-11-25T20:59:00+02:00"`), check: wantTime(testNow.Add(-time.Minute))},
		{name: "negative offset", data: body("time", `"2026-11-25T13:00:00-05:00"`), check: wantTime(testNow.Add(-time.Hour))},
		{name: "nanoseconds", data: body("time", `"2026-11-25T18:59:00.123456789Z"`), check: wantTime(testNow.Add(-time.Minute + 123456789))},
		{name: "no seconds fraction", data: body("time", `"2026-11-25T18:59:00Z"`)},
		{name: "no zone", data: body("time", `"2026-11-25T18:59:00"`), want: ReasonBadTime, field: "time"},
		{name: "space separator", data: body("time", `"2026-11-25 18:59:00Z"`), want: ReasonBadTime},
		{name: "lower case t", data: body("time", `"2026-11-25t18:59:00Z"`), want: ReasonBadTime},
		{name: "one-digit hour", data: body("time", `"2026-11-25T9:59:00Z"`), want: ReasonBadTime},
		{name: "comma fraction", data: body("time", `"2026-11-25T18:59:00,123Z"`), want: ReasonBadTime},
		{name: "empty fraction", data: body("time", `"2026-11-25T18:59:00.Z"`), want: ReasonBadTime},
		{name: "month 13", data: body("time", `"2026-13-25T18:59:00Z"`), want: ReasonBadTime},
		{name: "hour 24", data: body("time", `"2026-11-25T24:00:00Z"`), want: ReasonBadTime},
		{name: "zone hour 24", data: body("time", `"2026-11-25T18:59:00+24:00"`), want: ReasonBadTime},
		{name: "unix seconds", data: body("time", `1795633140`), want: ReasonWrongType, field: "time"},
		{name: "unix seconds string", data: body("time", `"1795633140"`), want: ReasonBadTime},
		{name: "escaped digit", data: body("time", `"\u0032026-11-25T18:59:00Z"`), want: ReasonBadTime},
		{name: "year 1 reads as missing", data: body("time", `"0001-01-01T00:00:00Z"`), want: ReasonMissingField},
	})
	runParseCases(t, short, []parseCase{
		{name: "lateness 1h: 59 min old", data: at(testNow.Add(-59 * time.Minute))},
		{name: "lateness 1h: 2h old", data: at(testNow.Add(-2 * time.Hour)), want: ReasonTooLate},
	})
}

func TestParseSubjectCheck(t *testing.T) {
	v := newTestValidator(t)
	runParseCases(t, v, []parseCase{
		{name: "match", data: body(), subject: "tenantguard.usage.acme.api_request"},
		{name: "no subject skips check", data: body(), subject: "none"},
		{name: "other tenant", data: body(), subject: "tenantguard.usage.globex.api_request", want: ReasonSubjectMismatch},
		{name: "tenant case", data: body(), subject: "tenantguard.usage.ACME.api_request", want: ReasonSubjectMismatch},
		{name: "other kind", data: body(), subject: "tenantguard.usage.acme.db_query", want: ReasonSubjectMismatch},
		{name: "wildcard tenant", data: body(), subject: "tenantguard.usage.*.api_request", want: ReasonSubjectMismatch},
		{name: "full wildcard", data: body(), subject: "tenantguard.usage.>", want: ReasonSubjectMismatch},
		{name: "extra token", data: body(), subject: "tenantguard.usage.acme.api_request.x", want: ReasonSubjectMismatch},
		{name: "missing kind", data: body(), subject: "tenantguard.usage.acme", want: ReasonSubjectMismatch},
		{name: "wrong prefix", data: body(), subject: "tenantguard.dlq.acme.api_request", want: ReasonSubjectMismatch},
		// A body tenant with a dot could align with a subject's extra token:
		// the tenant rule fires first, so it never reaches the subject check.
		{name: "dotted tenant aligned", data: body("tenant_id", `"acme.api_request"`), subject: "tenantguard.usage.acme.api_request.api_request", want: ReasonBadTenantID},
	})
}

func TestParseSubject(t *testing.T) {
	for _, tc := range []struct {
		subject, tenant, kind string
		ok                    bool
	}{
		{"tenantguard.usage.acme.api_request", "acme", "api_request", true},
		{"tenantguard.usage.a.b", "a", "b", true},
		{"tenantguard.usage.*.api_request", "*", "api_request", true}, // shape only; tokens are compared later
		{"tenantguard.usage.acme", "", "", false},
		{"tenantguard.usage.acme.", "", "", false},
		{"tenantguard.usage..api_request", "", "", false},
		{"tenantguard.usage.", "", "", false},
		{"tenantguard.usage", "", "", false},
		{"tenantguard.usage.acme.api_request.extra", "", "", false},
		{"tenantguard.dlq.acme.api_request", "", "", false},
		{"TENANTGUARD.usage.acme.api_request", "", "", false},
		{"xtenantguard.usage.acme.api_request", "", "", false},
		{"", "", "", false},
	} {
		tenant, kind, err := ParseSubject(tc.subject)
		if (err == nil) != tc.ok || tenant != tc.tenant || kind != tc.kind {
			t.Errorf("ParseSubject(%q): got (%q, %q, %v), want (%q, %q, ok=%v)", tc.subject, tenant, kind, err, tc.tenant, tc.kind, tc.ok)
		}
	}
	if got, want := Subject("acme", "db_query"), "tenantguard.usage.acme.db_query"; got != want {
		t.Errorf("Subject: got %q, want %q", got, want)
	}
	tenant, kind, err := ParseSubject(Subject("acme", "db_query"))
	if err != nil || tenant != "acme" || kind != "db_query" {
		t.Errorf("ParseSubject(Subject(acme, db_query)): got (%q, %q, %v)", tenant, kind, err)
	}
	if got, want := DLQSubject(ReasonTooLate), "tenantguard.dlq.too_late"; got != want {
		t.Errorf("DLQSubject: got %q, want %q", got, want)
	}
	if got, want := AlertSubject("acme"), "tenantguard.alerts.acme"; got != want {
		t.Errorf("AlertSubject: got %q, want %q", got, want)
	}
}

func TestNewValidator(t *testing.T) {
	for _, k := range []string{"", "GPU", "1gpu", "gpu-minutes", "gpu.minutes", strings.Repeat("a", 33)} {
		if _, err := NewValidator(Rules{CustomKinds: []string{k}}); err == nil {
			t.Errorf("NewValidator(custom kind %q): got nil error, want one", k)
		}
	}
	v, err := NewValidator(Rules{CustomKinds: []string{"gpu_minutes", strings.Repeat("a", 32)}})
	if err != nil {
		t.Fatalf("NewValidator: %v", err)
	}
	for _, k := range append([]string{"gpu_minutes", strings.Repeat("a", 32)}, BuiltinKinds...) {
		if !v.KnownKind(k) {
			t.Errorf("KnownKind(%q): got false, want true", k)
		}
	}
	if v.KnownKind("teleport") {
		t.Error("KnownKind(teleport): got true, want false")
	}
	if got, want := len(v.Kinds()), len(BuiltinKinds)+2; got != want {
		t.Errorf("len(Kinds()): got %d, want %d", got, want)
	}
	// Default lateness and clock: an event from 6 days ago passes, 8 days fails.
	e := Event{ID: "x", TenantID: "acme", Kind: KindAPIRequest, Quantity: 1, Time: time.Now().Add(-6 * 24 * time.Hour)}
	if err := v.Validate(&e, ""); err != nil {
		t.Errorf("Validate(6 days old) with defaults: %v", err)
	}
	e.Time = time.Now().Add(-8 * 24 * time.Hour)
	if got := reasonOf(v.Validate(&e, "")); got != ReasonTooLate {
		t.Errorf("Validate(8 days old) with defaults: got %q, want %q", got, ReasonTooLate)
	}
}

func TestValidTenantIDAndKindNameMatchPatterns(t *testing.T) {
	for _, s := range []string{
		"", "a", "A", "0", "-", "_", "a-", "a_", "a.b", "a b", "*", ">", "acmé", "a\n",
		strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 65), strings.Repeat("z", 32), strings.Repeat("z", 33),
		"api_request", "Api", "1abc", "a1_", "a\x00",
	} {
		if got, want := ValidTenantID(s), tenantRE.MatchString(s); got != want {
			t.Errorf("ValidTenantID(%q): got %v, want %v (regexp)", s, got, want)
		}
		if got, want := ValidKindName(s), kindRE.MatchString(s); got != want {
			t.Errorf("ValidKindName(%q): got %v, want %v (regexp)", s, got, want)
		}
	}
}

func FuzzValidTenantID(f *testing.F) {
	for _, s := range []string{"acme", "a.b", strings.Repeat("a", 64), "-x", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidTenantID(s), tenantRE.MatchString(s); got != want {
			t.Fatalf("ValidTenantID(%q): got %v, want %v (regexp)", s, got, want)
		}
		if got, want := ValidKindName(s), kindRE.MatchString(s); got != want {
			t.Fatalf("ValidKindName(%q): got %v, want %v (regexp)", s, got, want)
		}
	})
}

func TestValidationErrorFormat(t *testing.T) {
	// The collector writes Error() into the Tenantguard-Reason header:
	// "<reason_code>: <field>: <detail>", or "<reason_code>: <detail>".
	v := newTestValidator(t)
	var e Event
	err := v.Parse(body("quantity", "-3"), testSubject, &e)
	if err == nil {
		t.Fatal("Parse(quantity -3): got nil error")
	}
	if got, want := err.Error(), "bad_quantity: quantity: must be from 0 to 9007199254740991"; got != want {
		t.Errorf("Error(): got %q, want %q", got, want)
	}
	err = v.Parse([]byte(`[]`), testSubject, &e)
	if err == nil || !strings.HasPrefix(err.Error(), "invalid_json: ") || err.Field != "" {
		t.Errorf("Parse([]): got %v, want invalid_json without a field", err)
	}
	var target *ValidationError
	if !errors.As(error(err), &target) || target.Reason != ReasonInvalidJSON {
		t.Errorf("errors.As: got %v", target)
	}
}

func TestValidReplySubject(t *testing.T) {
	for s, want := range map[string]bool{
		"_INBOX.abc123":  true,
		"_INBOX.abc.def": true,
		"_INBOX.":        false,
		"_INBOX.*":       false,
		"_INBOX.a.>":     false,
		"_INBOX..a":      false,
		"_INBOX.a b":     false,
		"$JS.API.STREAM.DELETE.TENANTGUARD_USAGE": false,
		"tenantguard.usage.acme.api_request":      false,
		"_inbox.abc":                              false,
	} {
		if got := ValidReplySubject(s); got != want {
			t.Errorf("ValidReplySubject(%q) = %v, want %v", s, got, want)
		}
	}
}
