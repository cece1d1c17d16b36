package api

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
)

// Token is one accepted bearer token, stored as the hex SHA-256 of the
// token, never the token itself. Generate one with:
//
//	token=$(openssl rand -hex 32); printf %s "$token" | sha256sum
type Token struct {
	// Name identifies the token in logs. Required, unique.
	Name string `mapstructure:"name"`
	// SHA256 is the lower- or upper-case hex SHA-256 of the token. Required.
	SHA256 string `mapstructure:"sha256"`
	// Role is admin, billing or tenant:<tenant_id>. Required.
	Role string `mapstructure:"role"`
}

// Config of the HTTP API, under the `api` section.
type Config struct {
	// Listen is the address of /api/v1, /healthz and /readyz. Default ":8080".
	Listen string `mapstructure:"listen"`
	// Tokens lists the accepted bearer tokens. Default none: every /api/v1
	// request then gets 401.
	Tokens []Token `mapstructure:"tokens"`
	// MaxRange bounds to - from on every ranged endpoint. Default 744h (31 days).
	MaxRange time.Duration `mapstructure:"max_range"`
	// MaxPageSize bounds the limit parameter of list endpoints. Default 1000.
	MaxPageSize int `mapstructure:"max_page_size"`
	// DefaultPageSize is the limit when none is given. Default 100.
	DefaultPageSize int `mapstructure:"default_page_size"`
	// QueryTimeout bounds each JSON endpoint's queries; the streamed exports
	// run as long as the client reads. Default 30s.
	QueryTimeout time.Duration `mapstructure:"query_timeout"`
	// ShutdownTimeout bounds graceful shutdown; streams still running then
	// are cut. Default 10s.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	// MaxConcurrentExports caps the streamed exports (billing export and raw
	// events) running at once over all callers; one more is answered 429
	// with Retry-After. Each running export holds a ClickHouse connection,
	// so keep it below the API pool's clickhouse max_open_conns. Default 4.
	MaxConcurrentExports int `mapstructure:"max_concurrent_exports"`
	// MaxConcurrentExportsPerToken caps the streamed exports one token runs
	// at once, so one tenant cannot take every export slot. At most
	// MaxConcurrentExports. Default 2.
	MaxConcurrentExportsPerToken int `mapstructure:"max_concurrent_exports_per_token"`
	// ExportWriteTimeout bounds each write of a streamed export to the
	// client: a client that stops reading for this long is cut off and its
	// export slot and ClickHouse connection released. Default 30s.
	ExportWriteTimeout time.Duration `mapstructure:"export_write_timeout"`
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Listen:          ":8080",
		MaxRange:        31 * 24 * time.Hour,
		MaxPageSize:     1000,
		DefaultPageSize: 100,
		QueryTimeout:    30 * time.Second,
		ShutdownTimeout: 10 * time.Second,

		MaxConcurrentExports:         4,
		MaxConcurrentExportsPerToken: 2,
		ExportWriteTimeout:           30 * time.Second,
	}
}

// Validate names every bad field. It never echoes a token hash.
func (c Config) Validate() error {
	var errs []error
	if !strings.Contains(c.Listen, ":") {
		errs = append(errs, fmt.Errorf("api.listen: %q must be [host]:port", c.Listen))
	}
	names := map[string]bool{}
	hashes := map[string]string{}
	for i, t := range c.Tokens {
		field := fmt.Sprintf("api.tokens[%d]", i)
		if t.Name == "" {
			errs = append(errs, fmt.Errorf("%s.name: required", field))
		} else if names[t.Name] {
			errs = append(errs, fmt.Errorf("%s.name: %q is used twice", field, t.Name))
		}
		names[t.Name] = true
		if b, err := hex.DecodeString(t.SHA256); err != nil || len(b) != 32 {
			errs = append(errs, fmt.Errorf("%s.sha256: must be 64 hex digits (the SHA-256 of the token, not the token)", field))
		} else if other, dup := hashes[strings.ToLower(t.SHA256)]; dup {
			errs = append(errs, fmt.Errorf("%s.sha256: same token as %q", field, other))
		} else {
			hashes[strings.ToLower(t.SHA256)] = t.Name
		}
		if _, err := parseRole(t.Role); err != nil {
			errs = append(errs, fmt.Errorf("%s.role: %w", field, err))
		}
	}
	if c.MaxRange <= 0 {
		errs = append(errs, errors.New("api.max_range: must be > 0"))
	}
	if c.MaxPageSize < 1 || c.MaxPageSize > 100000 {
		errs = append(errs, errors.New("api.max_page_size: must be 1 to 100000"))
	}
	if c.DefaultPageSize < 1 || c.DefaultPageSize > c.MaxPageSize {
		errs = append(errs, errors.New("api.default_page_size: must be 1 to api.max_page_size"))
	}
	if c.QueryTimeout <= 0 {
		errs = append(errs, errors.New("api.query_timeout: must be > 0"))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("api.shutdown_timeout: must be > 0"))
	}
	if c.MaxConcurrentExports < 1 {
		errs = append(errs, errors.New("api.max_concurrent_exports: must be >= 1"))
	}
	if c.MaxConcurrentExportsPerToken < 1 || c.MaxConcurrentExportsPerToken > max(c.MaxConcurrentExports, 1) {
		errs = append(errs, errors.New("api.max_concurrent_exports_per_token: must be 1 to api.max_concurrent_exports"))
	}
	if c.ExportWriteTimeout <= 0 {
		errs = append(errs, errors.New("api.export_write_timeout: must be > 0"))
	}
	return errors.Join(errs...)
}

// role is what a token may do.
type role struct {
	admin   bool
	billing bool
	tenant  string // set for tenant:<id>
}

func parseRole(s string) (role, error) {
	switch {
	case s == "admin":
		return role{admin: true}, nil
	case s == "billing":
		return role{billing: true}, nil
	case strings.HasPrefix(s, "tenant:"):
		id := strings.TrimPrefix(s, "tenant:")
		if !event.ValidTenantID(id) {
			return role{}, fmt.Errorf("tenant id in %q must match %s", s, event.TenantPattern)
		}
		return role{tenant: id}, nil
	}
	return role{}, fmt.Errorf("%q must be admin, billing or tenant:<tenant_id>", s)
}
