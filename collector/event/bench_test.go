package event

import (
	"encoding/json"
	"testing"
	"time"
)

// benchEvent is a realistic event of about 180 bytes.
func benchEvent() []byte {
	return []byte(`{"id":"01JDX3ZP7Q8K2M4N6R8T0V2X4Z","tenant_id":"acme-corp","kind":"api_request","time":"2026-11-25T19:00:00.123Z",` +
		`"quantity":1,"service":"invoices-api","route":"GET /v1/invoices","user_id":"u_42","latency_ms":12.5,"status_code":200}`)
}

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkDecode(b *testing.B) {
	data := benchEvent()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var e Event
	for b.Loop() {
		if err := Decode(data, &e); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b)
}

// BenchmarkDecodeStdlib is the raw baseline: encoding/json into the same type.
func BenchmarkDecodeStdlib(b *testing.B) {
	data := benchEvent()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var e Event
	for b.Loop() {
		e = Event{Quantity: 1}
		if err := json.Unmarshal(data, &e); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b)
}

// BenchmarkParse is Decode plus every validation rule: the collector's call.
func BenchmarkParse(b *testing.B) {
	data := benchEvent()
	now := time.Date(2026, 11, 25, 19, 0, 0, 0, time.UTC)
	v, err := NewValidator(Rules{Now: func() time.Time { return now }})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var e Event
	for b.Loop() {
		if err := v.Parse(data, "tenantguard.usage.acme-corp.api_request", &e); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b)
}

func BenchmarkAppendJSON(b *testing.B) {
	var e Event
	if err := Decode(benchEvent(), &e); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendJSON(buf[:0], &e)
	}
	b.SetBytes(int64(len(buf)))
	reportRate(b)
}

// BenchmarkAppendJSONStdlib is the raw baseline: json.Marshal of the same event.
func BenchmarkAppendJSONStdlib(b *testing.B) {
	var e Event
	if err := Decode(benchEvent(), &e); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(&e); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b)
}
