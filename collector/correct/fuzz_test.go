package correct

import (
	"encoding/json"
	"testing"

	"github.com/tenantguard/tenantguard/collector/event"
)

// FuzzDecodeRequest checks that any body either decodes into a bounded
// request whose corrections validate or fail with a reason, or is refused
// with an error; never a panic.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"corrections":[{"id":"c1","tenant_id":"acme","event_id":"e1","action":"void","reason":"r","by":"b"}]}`))
	f.Add([]byte(`{"corrections":[{"id":"c1","tenant_id":"acme","event_id":"e1","action":"amend","quantity":1e308,"reason":"r","by":"b","event_time":"2026-11-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"corrections":[]}`))
	f.Add([]byte(`{"corrections":12}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodeRequest(data)
		if err != nil {
			return
		}
		if n := len(req.Corrections); n == 0 || n > event.MaxCorrectionsPerRequest {
			t.Fatalf("accepted %d corrections", n)
		}
		for i := range req.Corrections {
			c := &req.Corrections[i]
			if verr := event.ValidateCorrection(c); verr != nil {
				if verr.Reason == "" || verr.Error() == "" {
					t.Fatalf("refusal without a reason: %+v", verr)
				}
				continue
			}
			if c.Action == event.ActionAmend && (c.Quantity == nil || !(*c.Quantity >= 0 && *c.Quantity <= event.MaxQuantity)) {
				t.Fatalf("valid amendment with quantity %v", c.Quantity)
			}
			if _, err := json.Marshal(c); err != nil {
				t.Fatalf("a valid correction does not encode: %v", err)
			}
		}
	})
}
