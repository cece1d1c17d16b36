package billing

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// TestBillingQuantitiesAreExactDecimals: quantities with decimals sum to
// the exact decimal in the CSV and JSON (a float sum of 0.01 + 0.29 + ...
// prints 287.2599999999999), corrections net out exactly, and a re-issue of
// the same period finds nothing to adjust.
func TestBillingQuantitiesAreExactDecimals(t *testing.T) {
	st := teststore.New(t)
	x := newExporter(t, st)
	from, to := recent()
	at := from.Add(time.Hour)
	// compute_seconds with two decimals, as the demo sends them: the
	// exact sum is 1000 x 0.01 + 1000 x 0.29 - 0.29 (voided) + (0.3 - 0.29) (amended).
	var rows []store.Row
	for i := range 1000 {
		rows = append(rows,
			pricedRow("acme", fmt.Sprintf("a%d", i), event.KindComputeSeconds, at.Add(time.Duration(i)*time.Second), 0.01, "0.000050000"),
			pricedRow("acme", fmt.Sprintf("b%d", i), event.KindComputeSeconds, at.Add(time.Duration(i)*time.Second), 0.29, "0.000050000"))
	}
	insert(t, st, rows)
	applyCorrections(t, st, "acme", voidOf("acme", "b1"), amendOf("acme", "b2", 0.3))

	_, lines := billingLines(t, x, Request{From: from, To: to})
	l := lineOf(lines, "acme", LineUsage, event.KindComputeSeconds)
	if l == nil || l["quantity"] != "299.72" {
		t.Fatalf("got CSV quantity %q, want 299.72 exactly", l["quantity"])
	}
	var buf bytes.Buffer
	if _, err := x.Billing(context.Background(), &buf, Request{From: from, To: to, Format: FormatJSON, NoRecord: true}); err != nil {
		t.Fatal(err)
	}
	found := false
	for sc := bufio.NewScanner(&buf); sc.Scan(); {
		if !strings.Contains(sc.Text(), `"line_type":"usage"`) {
			continue
		}
		found = true
		if !strings.Contains(sc.Text(), `"quantity":299.72,`) {
			t.Errorf("got JSON line %s, want \"quantity\":299.72", sc.Text())
		}
		var line Line
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil || line.Quantity == nil || *line.Quantity != 299.72 {
			t.Errorf("JSON quantity decodes to %v (%v), want the number 299.72", line.Quantity, err)
		}
	}
	if !found {
		t.Fatal("no usage line in the JSON export")
	}
	// The same period again: every quantity is the same exact decimal, so
	// there is nothing to adjust.
	_, again := billingLines(t, x, Request{From: from, To: to})
	for _, l := range again {
		if strings.HasPrefix(l["line_type"], "adjustment") {
			t.Errorf("re-issue of an unchanged period: got adjustment line %v, want none", l)
		}
	}
	// A change of 0.01 shows as exactly 0.01.
	applyCorrections(t, st, "acme", amendOf("acme", "a7", 0.02))
	_, third := billingLines(t, x, Request{From: from, To: to})
	if l := lineOf(third, "acme", LineAdjustment, event.KindComputeSeconds); l == nil || l["quantity"] != "0.01" {
		t.Fatalf("adjustment after amending 0.01 to 0.02: got %v, want quantity 0.01", l)
	}
}
