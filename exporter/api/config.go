package api

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
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

// MaxMaxRange bounds max_range: ten years back from now stays well inside
// what ClickHouse DateTime holds (1970 to 2106).
const MaxMaxRange = 87600 * time.Hour

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
	if err := CheckListen(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("api.listen: %w", err))
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
	if c.MaxRange <= 0 || c.MaxRange > MaxMaxRange {
		errs = append(errs, errors.New("api.max_range: must be > 0 and at most 87600h (10 years)"))
	}
	if c.MaxPageSize < 1 || c.MaxPageSize > 100000 {
		errs = append(errs, errors.New("api.max_page_size: must be 1 to 100000"))
	}
	if c.DefaultPageSize < 1 || c.DefaultPageSize > c.MaxPageSize {
		errs = append(errs, errors.New("api.default_page_size: must be 1 to api.max_page_size"))
	}
	if c.QueryTimeout < 100*time.Millisecond || c.QueryTimeout > time.Hour {
		errs = append(errs, errors.New("api.query_timeout: must be 100ms to 1h"))
	}
	if c.ShutdownTimeout <= 0 || c.ShutdownTimeout > 10*time.Minute {
		errs = append(errs, errors.New("api.shutdown_timeout: must be > 0 and at most 10m"))
	}
	if c.MaxConcurrentExports < 1 {
		errs = append(errs, errors.New("api.max_concurrent_exports: must be >= 1"))
	}
	if c.MaxConcurrentExportsPerToken < 1 || c.MaxConcurrentExportsPerToken > max(c.MaxConcurrentExports, 1) {
		errs = append(errs, errors.New("api.max_concurrent_exports_per_token: must be 1 to api.max_concurrent_exports"))
	}
	if c.ExportWriteTimeout < 100*time.Millisecond || c.ExportWriteTimeout > time.Hour {
		errs = append(errs, errors.New("api.export_write_timeout: must be 100ms to 1h"))
	}
	return errors.Join(errs...)
}

// CheckListen checks a listen address, [host]:port: the port is a number
// from 0 to 65535 (0 picks a free one) and the host is empty (every
// interface), an IP address or a host name.
func CheckListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q must be [host]:port, like :8080 or 127.0.0.1:8080", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: the port must be a number from 0 to 65535", addr)
	}
	if ip, _, _ := strings.Cut(host, "%"); host != "" && net.ParseIP(ip) == nil && !validHostname(host) {
		return fmt.Errorf("%q: the host must be empty, an IP address or a host name", addr)
	}
	return nil
}

// validHostname reports whether h is a DNS name: dot-separated labels of
// letters, digits and inner hyphens, each 1 to 63 bytes, 253 in all.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
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
