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

// TestTenantBoundsFromConfig: the share and burst the fair queue gets.
func TestTenantBoundsFromConfig(t *testing.T) {
	tests := []struct {
		name             string
		buffer, share    int
		rate             float64
		burst            int
		wantShare, wantB int
	}{
		{"defaults", 100000, 25000, 0, 0, 25000, 1},
		{"share at least the buffer is no bound", 1000, 25000, 0, 0, 0, 1},
		{"share 0 is no bound", 1000, 0, 0, 0, 0, 1},
		{"burst defaults to a tenth of a second", 100000, 25000, 5000, 0, 25000, 500},
		{"burst given", 100000, 25000, 5000, 20, 25000, 20},
		{"slow rate still bursts 1", 100000, 25000, 3, 0, 25000, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.BufferSize, c.TenantBuffer, c.TenantRate, c.TenantBurst = tt.buffer, tt.share, tt.rate, tt.burst
			if got := tenantShare(c); got != tt.wantShare {
				t.Errorf("share: got %d, want %d", got, tt.wantShare)
			}
			if got := tenantBurst(c); got != tt.wantB {
				t.Errorf("burst: got %d, want %d", got, tt.wantB)
			}
		})
	}
}
