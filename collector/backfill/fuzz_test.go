package backfill

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
)

// FuzzImportParse feeds any input to the import parser, as NDJSON and as
// CSV: every line read is either a valid, priced row or a rejection with
// a reason and a line number; never a panic.
func FuzzImportParse(f *testing.F) {
	now := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	f.Add([]byte(`{"id":"a","tenant_id":"acme","kind":"api_request","time":"2026-11-19T00:00:00Z"}` + "\n\nnot json\n"))
	f.Add([]byte("id,tenant_id,kind,time,quantity,attrs\na,acme,api_request,2026-11-19T00:00:00Z,2,\"{\"\"k\"\":\"\"v\"\"}\"\nb,acme\n\"unterminated\n"))
	f.Add([]byte("id,tenant_id,kind,time\n"))
	f.Add([]byte("\ufeffid,tenant_id,kind,time,quantity\nx,acme,ai_tokens,2026-11-19T00:00:00.5+01:00,1e3\n"))
	v, err := event.NewValidator(event.Rules{Now: func() time.Time { return now }})
	if err != nil {
		f.Fatal(err)
	}
	im := &Importer{cfg: DefaultConfig(), pricer: fuzzPricer{}, validator: v, now: func() time.Time { return now }}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, format := range []Format{FormatNDJSON, FormatCSV} {
			src, err := newSource(bytes.NewReader(data), format, im)
			if err != nil {
				continue // a CSV without a usable header
			}
			out := make(chan batch, 1)
			done := make(chan error, 1)
			go func() { defer close(out); done <- src.run(context.Background(), 7, out) }()
			var rows int64
			for b := range out {
				for _, r := range b.rows {
					if v.Validate(r.Event, "") != nil || r.Event.ID == "" {
						t.Fatalf("%s: an invalid row was kept: %+v", format, r.Event)
					}
				}
				rows += int64(len(b.rows))
			}
			if err := <-done; err != nil {
				t.Fatalf("%s: %v", format, err)
			}
			var sum Summary
			sum.Reasons = map[string]int64{}
			src.summarize(&sum)
			if rows+sum.Rejected != sum.Read {
				t.Fatalf("%s: %d rows + %d rejected != %d read", format, rows, sum.Rejected, sum.Read)
			}
			for _, e := range sum.Errors {
				if e.Line < 1 || e.Reason == "" {
					t.Fatalf("%s: rejection without a line or reason: %+v", format, e)
				}
			}
		}
	})
}

type fuzzPricer struct{}

func (fuzzPricer) Price(string, string) (string, decimal.Decimal) {
	return "default", decimal.RequireFromString("0.001")
}
func (fuzzPricer) Version() string { return "fuzz" }
