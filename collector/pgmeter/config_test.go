package pgmeter_test

import (
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/collector/pgmeter"
)

// TestConfigValidateNamesGoFields: a service sets the tracer's Config in
// code, so every error names the Go field.
func TestConfigValidateNamesGoFields(t *testing.T) {
	if err := pgmeter.DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	c := pgmeter.Config{Kind: "Bad Kind", Database: strings.Repeat("d", 64), MaxStatements: -1}
	err := c.Validate()
	for _, want := range []string{"pgmeter.Config.Kind:", "pgmeter.Config.Database:", "pgmeter.Config.MaxStatements:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want it to name %s", err, want)
		}
	}
}
