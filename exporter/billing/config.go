package billing

import (
	"errors"
	"fmt"
)

// Config of the billing export. It lives under the `billing` section.
type Config struct {
	// Currency is the ISO 4217 code written on every line; it must be the
	// price book's currency. Default "USD".
	Currency string `mapstructure:"currency"`
	// MinorUnits is the number of decimals of the currency's smallest unit,
	// used for amount_rounded. Default 2 (cents).
	MinorUnits int32 `mapstructure:"minor_units"`
	// MaxExternalSortBytes lets ClickHouse spill the events export's ORDER BY
	// to disk above this many bytes, so server memory stays bounded too.
	// Default 256 MiB.
	MaxExternalSortBytes uint64 `mapstructure:"max_external_sort_bytes"`
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{Currency: "USD", MinorUnits: 2, MaxExternalSortBytes: 256 << 20}
}

// Validate names every bad field.
func (c Config) Validate() error {
	var errs []error
	if len(c.Currency) != 3 || !isUpper(c.Currency) {
		errs = append(errs, fmt.Errorf("billing.currency: %q must be a 3-letter ISO 4217 code like USD", c.Currency))
	}
	if c.MinorUnits < 0 || c.MinorUnits > 9 {
		errs = append(errs, errors.New("billing.minor_units: must be 0 to 9"))
	}
	if c.MaxExternalSortBytes == 0 {
		errs = append(errs, errors.New("billing.max_external_sort_bytes: must be > 0"))
	}
	return errors.Join(errs...)
}

func isUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}
