package emit

import (
	"strings"
	"testing"
)

// TestConfigValidateNamesGoFields: a service sets the emitter's Config in
// code, so every error names the Go field.
func TestConfigValidateNamesGoFields(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	c := Config{Overflow: "spill", Batch: -1, TenantBuffer: -1, TenantRate: -1, TenantBurst: -1, TenantSeries: -1}
	err := c.Validate()
	for _, want := range []string{"emit.Config.BufferSize:", "emit.Config.Overflow:", "emit.Config.MaxInFlight:", "emit.Config.AckTimeout", "emit.Config.Batch:",
		"emit.Config.TenantBuffer:", "emit.Config.TenantRate:", "emit.Config.TenantBurst:", "emit.Config.TenantSeries:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want it to name %s", err, want)
		}
	}
	c = DefaultConfig()
	c.Linger = 0
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "emit.Config.Linger:") {
		t.Errorf("got %v, want it to name emit.Config.Linger", err)
	}
	c.Batch = 0 // async only: Linger unused
	if err := c.Validate(); err != nil {
		t.Errorf("Batch 0 with no Linger: got %v, want no error", err)
	}
}
