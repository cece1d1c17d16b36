package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

func TestExportCommands(t *testing.T) {
	srv := testenv.NewClickHouseServer(t)
	db := srv.NewDatabase(t)
	st := teststore.On(t, srv, db)
	ctx := context.Background()
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var rows []store.Row
	for i := 0; i < 100; i++ {
		unit := decimal.RequireFromString("0.000123456")
		rows = append(rows, store.Row{
			Event: &event.Event{ID: "e" + string(rune('a'+i%26)) + time.Duration(i).String(), TenantID: []string{"acme", "globex"}[i%2],
				Kind: "ai_tokens", Time: t0.Add(time.Duration(i) * time.Minute), Quantity: 777},
			Plan: "pro", UnitPrice: unit, Cost: unit.Mul(decimal.NewFromInt(777)), PriceVersion: "v1"})
	}
	if err := st.InsertEvents(ctx, rows, time.Now()); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TENANTGUARD_CLICKHOUSE_DATABASE", db)
	t.Chdir(t.TempDir())
	run := func(args ...string) (string, string, error) {
		var out, errb bytes.Buffer
		a := newApp(&out, &errb)
		root := a.root()
		root.SetArgs(append(args, "--clickhouse-addr", srv.Addr))
		err := root.ExecuteContext(ctx)
		return out.String(), errb.String(), err
	}

	out, stderr, err := run("export", "billing", "--from", "2026-11-01", "--to", "2026-11-02")
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(recs) != 1+2*2 || recs[0][0] != "tenant_id" {
		t.Fatalf("billing csv: %v %q", err, out)
	}
	// 50 events x 777 tokens x 0.000123456 = 4.796265600 per tenant
	if recs[2][1] != "tenant_total" || recs[2][7] != "4.796265600" || recs[2][8] != "4.80" {
		t.Fatalf("acme total line %v", recs[2])
	}
	if !strings.Contains(stderr, "exported 4 lines, 2 tenants, 100 events, total 9.592531200 USD") {
		t.Fatalf("stderr summary: %q", stderr)
	}

	file := filepath.Join(t.TempDir(), "acme.ndjson")
	if _, _, err := run("export", "events", "--tenant", "acme", "--from", "2026-11-01T00:00:00Z", "--to", "2026-11-02T00:00:00Z", "-o", file); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil || bytes.Count(b, []byte("\n")) != 50 || bytes.Contains(b, []byte("globex")) {
		t.Fatalf("events file: %v, %d lines", err, bytes.Count(b, []byte("\n")))
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(file), ".*partial*"))
	if len(left) != 0 {
		t.Fatalf("partial files left: %v", left)
	}

	for _, args := range [][]string{
		{"export", "billing", "--from", "2026-11-02", "--to", "2026-11-01"},
		{"export", "billing", "--from", "yesterday", "--to", "2026-11-01"},
		{"export", "billing", "--from", "2026-11-01", "--to", "2026-11-02", "--tenant", "a' OR 1=1"},
		{"export", "billing", "--from", "2026-11-01", "--to", "2026-11-02", "--format", "xml"},
		{"export", "events", "--from", "2026-11-01", "--to", "2026-11-02"},
	} {
		_, _, err := run(args...)
		var ee *exitError
		if err == nil || (!asExit(err, &ee) && !strings.Contains(err.Error(), "required")) || (ee != nil && ee.code != 2) {
			t.Errorf("%v: got %v, want a usage error (exit 2)", args, err)
		}
	}
}

func asExit(err error, ee **exitError) bool {
	for e := err; e != nil; {
		if x, ok := e.(*exitError); ok {
			*ee = x
			return true
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		e = u.Unwrap()
	}
	return false
}
