package advisor

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Config is the `advisor` section of the tenantguard config.
type Config struct {
	// Share is the share of a pooled resource (events, cost, db_query
	// time, compute seconds) above which a tenant is over in an hour.
	// Default 0.2.
	Share float64 `mapstructure:"share"`
	// Sustained is the fraction of the window's hours a tenant must be
	// over the share, in one resource, to be heavy: "move to dedicated"
	// and a heavy_tenant alert. Default 0.8.
	Sustained float64 `mapstructure:"sustained"`
	// Watch is the fraction of the hours over the share that earns
	// "watch"; a rising trend earns it too. Default 0.25.
	Watch float64 `mapstructure:"watch"`
	// Window is the span of hours the periodic run and `advise` without
	// --from judge, ending at the last complete hour. Default 168h.
	Window time.Duration `mapstructure:"window"`
	// Trend is the recent span, at the end of the range, whose share is
	// compared with the whole range's. Default 24h.
	Trend time.Duration `mapstructure:"trend"`
	// TrendFactor: a resource trends up when its recent share is at least
	// trend_factor times its share over the range (and at least half of
	// share), down when at most 1/trend_factor times. Default 1.5.
	TrendFactor float64 `mapstructure:"trend_factor"`
	// Interval is how often the daemon re-judges and raises or resolves
	// heavy_tenant alerts. Default 1h.
	Interval time.Duration `mapstructure:"interval"`
}

// MaxRange bounds the range one report covers (a year and a day).
const MaxRange = 366 * 24 * time.Hour

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Share:       0.2,
		Sustained:   0.8,
		Watch:       0.25,
		Window:      168 * time.Hour,
		Trend:       24 * time.Hour,
		TrendFactor: 1.5,
		Interval:    time.Hour,
	}
}

// Validate names every bad field.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, msg string) { errs = append(errs, fmt.Errorf("advisor.%s: %s", field, msg)) }
	if !(c.Share > 0 && c.Share < 1) {
		bad("share", "must be in (0, 1)")
	}
	if !(c.Sustained > 0 && c.Sustained <= 1) {
		bad("sustained", "must be in (0, 1]")
	}
	if !(c.Watch > 0 && c.Watch <= 1) {
		bad("watch", "must be in (0, 1]")
	} else if c.Sustained > 0 && c.Watch > c.Sustained {
		bad("watch", "must be at most advisor.sustained")
	}
	if c.Window < time.Hour || c.Window > MaxRange || c.Window%time.Hour != 0 {
		bad("window", "must be whole hours from 1h to 8784h")
	}
	if c.Trend < time.Hour || c.Trend%time.Hour != 0 {
		bad("trend", "must be whole hours, at least 1h")
	} else if c.Window >= time.Hour && c.Trend > c.Window {
		bad("trend", "must be at most advisor.window")
	}
	if !(c.TrendFactor > 1) || math.IsInf(c.TrendFactor, 0) {
		bad("trend_factor", "must be > 1")
	}
	if c.Interval < time.Minute || c.Interval > 24*time.Hour {
		bad("interval", "must be from 1m to 24h")
	}
	return errors.Join(errs...)
}
