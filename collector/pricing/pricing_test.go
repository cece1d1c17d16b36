package pricing

import (
	"math"
	"strings"
	"testing"

	"github.com/shopspring/decimal"
)

func book(t *testing.T) *Book {
	t.Helper()
	c := DefaultConfig()
	c.Version = "2026-11"
	c.Prices = map[string]string{"api_request": "0.0001", "ai_tokens": "0.000002"}
	c.Plans = map[string]Plan{"default": {}, "pro": {Prices: map[string]string{"api_request": "0.00008"}, SpendCap: "500"}}
	c.Tenants = map[string]string{"acme": "pro"}
	b, err := New(c, func(k string) bool { return k != "nope" })
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPriceAndCost(t *testing.T) {
	b := book(t)
	tests := []struct {
		tenant, kind string
		qty          float64
		plan, cost   string
	}{
		{"acme", "api_request", 1, "pro", "0.00008"},
		{"other", "api_request", 1, "default", "0.0001"},
		{"acme", "ai_tokens", 1500, "pro", "0.003"},
		{"acme", "ai_tokens", 0.1, "pro", "0.0000002"},
		{"acme", "storage_bytes", 1e9, "pro", "0"},
	}
	for _, tt := range tests {
		plan, unit := b.Price(tt.tenant, tt.kind)
		got := Cost(tt.qty, unit)
		if plan != tt.plan || !got.Equal(decimal.RequireFromString(tt.cost)) {
			t.Errorf("%s/%s x%v: got %s %s, want %s %s", tt.tenant, tt.kind, tt.qty, plan, got, tt.plan, tt.cost)
		}
	}
}

func TestCostSumsExactly(t *testing.T) {
	// A float sum of 0.1 ten million times drifts; decimal must not.
	unit := decimal.RequireFromString("0.1")
	sum := decimal.Zero
	for i := 0; i < 100000; i++ {
		sum = sum.Add(Cost(1, unit))
	}
	if !sum.Equal(decimal.NewFromInt(10000)) {
		t.Fatalf("got %s, want 10000", sum)
	}
}

func TestValidateNamesEveryBadField(t *testing.T) {
	c := DefaultConfig()
	c.Currency = "dollars"
	c.Prices = map[string]string{"api_request": "-1", "nope": "1", "ai_tokens": "0.0000000001", "job_run": "1000000000"}
	c.Tenants = map[string]string{"bad.tenant": "default", "acme": "gold"}
	c.Plans = map[string]Plan{"default": {}, "huge": {SpendCap: "1e400"}, "nan": {DegradedRate: math.NaN()}, "inf": {DegradedRate: math.Inf(1)}}
	err := c.Validate(func(k string) bool { return k != "nope" })
	for _, want := range []string{"pricing.currency", "pricing.prices.api_request", "pricing.prices.nope", "pricing.prices.ai_tokens", "pricing.prices.job_run", "pricing.tenants.bad.tenant", "pricing.tenants.acme",
		"pricing.plans.huge.spend_cap", "pricing.plans.nan.degraded_rate", "pricing.plans.inf.degraded_rate"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}

func TestFitsDecimal18_9(t *testing.T) {
	for _, tt := range []struct {
		v    string
		want bool
	}{
		{"0", true},
		{"999999999.999999999", true},
		{"-999999999.999999999", true},
		{"1000000000", false},
		{"10000000000", false},
	} {
		if got := Fits(decimal.RequireFromString(tt.v)); got != tt.want {
			t.Errorf("Fits(%s) = %v, want %v", tt.v, got, tt.want)
		}
	}
}
