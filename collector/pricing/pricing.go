package pricing

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
)

// Scale is the number of decimal places kept on unit prices and costs.
const Scale = 9

// maxAmount bounds unit prices and costs: the events table stores both as
// Decimal(18, 9), whose magnitude stays below 10^9.
var maxAmount = decimal.New(1, 18-Scale)

// Fits reports whether d fits a Decimal(18, 9) column: a unit price or a
// cost that does not cannot be stored.
func Fits(d decimal.Decimal) bool { return d.Abs().LessThan(maxAmount) }

// Plan is a pricing tier.
type Plan struct {
	// Prices override the book's default unit price per kind. Default none.
	Prices map[string]string `mapstructure:"prices"`
	// SpendCap is the monthly spend cap in the book's currency; empty means none.
	SpendCap string `mapstructure:"spend_cap"`
	// DegradedRate is the events/s a tenant is throttled to at 100% of its cap. Default 0 (no throttle).
	DegradedRate float64 `mapstructure:"degraded_rate"`
}

// Config is the price book.
type Config struct {
	// Version is stored on every priced row. Default "default".
	Version string `mapstructure:"version"`
	// Currency of every price. Default "USD".
	Currency string `mapstructure:"currency"`
	// DefaultPlan is the plan of tenants not listed in Tenants. Default "default".
	DefaultPlan string `mapstructure:"default_plan"`
	// Prices are unit prices per kind, as decimal strings. Default none (free).
	Prices map[string]string `mapstructure:"prices"`
	// Plans by name. Default one plan, "default", with no overrides.
	Plans map[string]Plan `mapstructure:"plans"`
	// Tenants maps a tenant id to its plan. Default none.
	Tenants map[string]string `mapstructure:"tenants"`
}

// DefaultConfig returns a free price book with one plan.
func DefaultConfig() Config {
	return Config{
		Version:     "default",
		Currency:    "USD",
		DefaultPlan: "default",
		Prices:      map[string]string{},
		Plans:       map[string]Plan{"default": {}},
		Tenants:     map[string]string{},
	}
}

// maxSpendCap bounds a monthly cap, so that it and the spend it is compared
// with stay exact in the detector's float64.
var maxSpendCap = decimal.New(1, 15)

// Validate names every bad field. kinds reports whether a kind is known.
func (c Config) Validate(kinds func(string) bool) error {
	var errs []error
	if c.Version == "" || len(c.Version) > 64 {
		errs = append(errs, errors.New("pricing.version: must be 1 to 64 characters"))
	}
	if len(c.Currency) != 3 {
		errs = append(errs, fmt.Errorf("pricing.currency: %q must be a 3-letter code", c.Currency))
	}
	if _, ok := c.Plans[c.DefaultPlan]; !ok {
		errs = append(errs, fmt.Errorf("pricing.default_plan: %q is not in pricing.plans", c.DefaultPlan))
	}
	errs = append(errs, validatePrices("pricing.prices", c.Prices, kinds)...)
	for _, name := range slices.Sorted(maps.Keys(c.Plans)) {
		p := c.Plans[name]
		errs = append(errs, validatePrices("pricing.plans."+name+".prices", p.Prices, kinds)...)
		if p.SpendCap != "" {
			if d, err := decimal.NewFromString(p.SpendCap); err != nil || d.Sign() <= 0 || d.GreaterThanOrEqual(maxSpendCap) {
				errs = append(errs, fmt.Errorf("pricing.plans.%s.spend_cap: %q must be a positive decimal below %s", name, p.SpendCap, maxSpendCap))
			}
		}
		if !(p.DegradedRate >= 0 && p.DegradedRate <= math.MaxFloat64) { // also NaN and +Inf
			errs = append(errs, fmt.Errorf("pricing.plans.%s.degraded_rate: must be a finite number >= 0", name))
		}
	}
	for _, tenant := range slices.Sorted(maps.Keys(c.Tenants)) {
		if !event.ValidTenantID(tenant) {
			errs = append(errs, fmt.Errorf("pricing.tenants.%s: invalid tenant id", tenant))
		}
		if _, ok := c.Plans[c.Tenants[tenant]]; !ok {
			errs = append(errs, fmt.Errorf("pricing.tenants.%s: plan %q is not in pricing.plans", tenant, c.Tenants[tenant]))
		}
	}
	return errors.Join(errs...)
}

func validatePrices(path string, prices map[string]string, kinds func(string) bool) []error {
	var errs []error
	for _, kind := range slices.Sorted(maps.Keys(prices)) {
		if kinds != nil && !kinds(kind) {
			errs = append(errs, fmt.Errorf("%s.%s: unknown kind", path, kind))
		}
		d, err := decimal.NewFromString(prices[kind])
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s.%s: %q is not a decimal", path, kind, prices[kind]))
		case d.Sign() < 0:
			errs = append(errs, fmt.Errorf("%s.%s: must be >= 0", path, kind))
		case d.Exponent() < -Scale:
			errs = append(errs, fmt.Errorf("%s.%s: more than %d decimal places", path, kind, Scale))
		case !Fits(d):
			errs = append(errs, fmt.Errorf("%s.%s: must be < %s", path, kind, maxAmount))
		}
	}
	return errs
}

// Book prices events. It is immutable and safe for concurrent use.
type Book struct {
	version, currency, defaultPlan string
	tenants                        map[string]string
	prices                         map[string]map[string]decimal.Decimal // plan -> kind -> unit price
	caps                           map[string]decimal.Decimal
	degraded                       map[string]float64
}

// New compiles a validated Config into a Book.
func New(c Config, kinds func(string) bool) (*Book, error) {
	if err := c.Validate(kinds); err != nil {
		return nil, err
	}
	b := &Book{
		version: c.Version, currency: c.Currency, defaultPlan: c.DefaultPlan,
		tenants: c.Tenants, prices: map[string]map[string]decimal.Decimal{},
		caps: map[string]decimal.Decimal{}, degraded: map[string]float64{},
	}
	for name, p := range c.Plans {
		m := make(map[string]decimal.Decimal)
		for k, v := range c.Prices {
			m[k] = decimal.RequireFromString(v)
		}
		for k, v := range p.Prices {
			m[k] = decimal.RequireFromString(v)
		}
		b.prices[name] = m
		if p.SpendCap != "" {
			b.caps[name] = decimal.RequireFromString(p.SpendCap)
		}
		b.degraded[name] = p.DegradedRate
	}
	return b, nil
}

// Version returns the price book version stored on rows.
func (b *Book) Version() string { return b.version }

// Currency returns the book's currency code.
func (b *Book) Currency() string { return b.currency }

// Plan returns the plan of tenant.
func (b *Book) Plan(tenant string) string {
	if p, ok := b.tenants[tenant]; ok {
		return p
	}
	return b.defaultPlan
}

// Price returns the plan and unit price that apply to tenant and kind.
// A kind with no price is free.
func (b *Book) Price(tenant, kind string) (plan string, unit decimal.Decimal) {
	plan = b.Plan(tenant)
	return plan, b.prices[plan][kind]
}

// Cost returns quantity × unit rounded to Scale places. The quantity is
// taken at its shortest decimal form, so 0.1 tokens cost exactly 0.1 × unit.
func Cost(quantity float64, unit decimal.Decimal) decimal.Decimal {
	if unit.IsZero() || quantity == 0 {
		return decimal.Zero
	}
	return decimal.NewFromFloat(quantity).Mul(unit).Round(Scale)
}

// SpendCap returns plan's monthly cap and whether it has one.
func (b *Book) SpendCap(plan string) (decimal.Decimal, bool) {
	c, ok := b.caps[plan]
	return c, ok
}

// Caps returns every plan's monthly cap as float64, for detectors.
func (b *Book) Caps() map[string]float64 {
	out := make(map[string]float64, len(b.caps))
	for p, c := range b.caps {
		out[p] = c.InexactFloat64()
	}
	return out
}

// DegradedRate returns the events/s plan is throttled to at 100% of its cap.
func (b *Book) DegradedRate(plan string) float64 { return b.degraded[plan] }
