package billing

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/testenv"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// layouts are the ClickHouse layouts the tests that reconcile exports run
// on: one node, and two shards behind Distributed tables.
var layouts = []struct {
	name string
	open func(testing.TB) *store.Store
}{
	{"single node", teststore.New},
	{"two shards", func(t testing.TB) *store.Store {
		st, c := teststore.Sharded(t)
		t.Cleanup(func() { checkSpread(t, st, c) })
		return st
	}},
}

// checkSpread checks, at the end of a test on a cluster, that every shard
// holds some of the events and that the shards' rows add up to what the
// Distributed table reads.
func checkSpread(t testing.TB, st *store.Store, c *testenv.ClickHouseCluster) {
	t.Helper()
	ctx := context.Background()
	var total, sum uint64
	if err := st.Conn().QueryRow(ctx, "SELECT count() FROM "+st.Table("events")).Scan(&total); err != nil {
		t.Fatal(err)
	}
	for i, s := range c.Shards {
		var n uint64
		if err := s.Conn(t, "default").QueryRow(ctx, "SELECT count() FROM "+st.Table("events_local")).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Errorf("shard %d holds no events; want the test's tenants spread over both", i+1)
		}
		sum += n
	}
	if sum != total {
		t.Errorf("shards hold %d events, the Distributed table reads %d", sum, total)
	}
}

func newExporter(t testing.TB, st *store.Store) *Exporter {
	t.Helper()
	x, err := New(DefaultConfig(), st)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// insert writes rows in chunks through the store's batch insert.
func insert(t testing.TB, st *store.Store, rows []store.Row) {
	t.Helper()
	const chunk = 100000
	for i := 0; i < len(rows); i += chunk {
		if err := st.InsertEvents(context.Background(), rows[i:min(i+chunk, len(rows))], time.Now()); err != nil {
			t.Fatal(err)
		}
	}
}

// price is an awkward price book: sub-cent prices with nine decimals.
var price = map[string][]string{
	event.KindAITokens:   {"0.000123456", "0.000098765"}, // a price change mid-range
	event.KindAPIRequest: {"0.000033333"},
	event.KindDBQuery:    {"0.000001001"},
	event.KindJobRun:     {"0.017777777"},
}

var kinds = []string{event.KindAITokens, event.KindAPIRequest, event.KindDBQuery, event.KindJobRun}

// genRows makes n priced events over tenants tenants spread across [from, to).
func genRows(n, tenants int, from, to time.Time, seed uint64) []store.Row {
	r := rand.New(rand.NewPCG(seed, seed+1))
	span := to.Sub(from).Milliseconds()
	rows := make([]store.Row, n)
	for i := range rows {
		kind := kinds[r.IntN(len(kinds))]
		prices := price[kind]
		pi := r.IntN(len(prices))
		unit := decimal.RequireFromString(prices[pi])
		qty := 1.0
		if kind == event.KindAITokens {
			qty = float64(1 + r.IntN(5000))
		}
		e := &event.Event{
			ID: fmt.Sprintf("e%08d", i), TenantID: fmt.Sprintf("tenant-%04d", r.IntN(tenants)), Kind: kind,
			Time:     from.Add(time.Duration(r.Int64N(span)) * time.Millisecond),
			Quantity: qty, Service: "svc", Route: "GET /v1/x", UserID: "u1",
			LatencyMs: float64(r.IntN(500)), StatusCode: 200, Attrs: map[string]string{"model": "m"},
		}
		rows[i] = store.Row{Event: e, Plan: "pro", UnitPrice: unit,
			Cost: unit.Mul(decimal.NewFromFloat(qty)), PriceVersion: fmt.Sprintf("v%d", pi+1)}
	}
	return rows
}

// insertGen generates and inserts n events chunk by chunk, so a million
// events never sit in memory at once. Ids stay unique across chunks.
func insertGen(t testing.TB, st *store.Store, n, tenants int, from, to time.Time, seed uint64) {
	t.Helper()
	const chunk = 100000
	for done := 0; done < n; done += chunk {
		rows := genRows(min(chunk, n-done), tenants, from, to, seed+uint64(done))
		for _, r := range rows {
			r.Event.ID = fmt.Sprintf("%d-%s", done, r.Event.ID)
		}
		insert(t, st, rows)
	}
}
