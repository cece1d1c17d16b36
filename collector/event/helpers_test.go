package event

import (
	"strings"
	"testing"
	"time"
)

// testNow is the fixed clock of the unit tests.
var testNow = time.Date(2026, 11, 25, 19, 0, 0, 0, time.UTC)

const testSubject = "tenantguard.usage.acme.api_request"

// baseMembers is a valid event at testNow, as ordered raw JSON members.
var baseMembers = [][2]string{
	{"id", `"01JDX3ZP0000000000000000AB"`},
	{"tenant_id", `"acme"`},
	{"kind", `"api_request"`},
	{"time", `"2026-11-25T18:59:00.123Z"`},
	{"quantity", `1`},
	{"service", `"invoices-api"`},
	{"route", `"GET /v1/invoices"`},
	{"user_id", `"u_42"`},
	{"latency_ms", `12.5`},
	{"status_code", `200`},
	{"error", `false`},
	{"attrs", `{"model":"gpt-4o"}`},
}

// body returns the base event with members changed: pairs of key and raw
// JSON value. A key of the base gets the new value in place, "-" as value
// removes it, and a new key is appended.
func body(kv ...string) []byte {
	if len(kv)%2 != 0 {
		panic("body: odd number of arguments")
	}
	members := append([][2]string(nil), baseMembers...)
	for i := 0; i < len(kv); i += 2 {
		k, v := kv[i], kv[i+1]
		found := false
		for j := range members {
			if members[j][0] == k {
				members[j][1] = v
				found = true
			}
		}
		if !found {
			members = append(members, [2]string{k, v})
		}
	}
	var b strings.Builder
	b.WriteByte('{')
	first := true
	for _, m := range members {
		if m[1] == "-" {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(`"` + m[0] + `":` + m[1])
	}
	b.WriteByte('}')
	return []byte(b.String())
}

// newTestValidator returns a Validator with the fixed clock and one custom
// kind, gpu_minutes.
func newTestValidator(t testing.TB, rules ...func(*Rules)) *Validator {
	t.Helper()
	r := Rules{CustomKinds: []string{"gpu_minutes"}, Now: func() time.Time { return testNow }}
	for _, f := range rules {
		f(&r)
	}
	v, err := NewValidator(r)
	if err != nil {
		t.Fatalf("NewValidator: %v", err)
	}
	return v
}

// reasonOf returns the reason of err, or "" for nil.
func reasonOf(err *ValidationError) Reason {
	if err == nil {
		return ""
	}
	return err.Reason
}
