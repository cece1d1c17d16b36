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
	c := Config{Overflow: "spill"}
	err := c.Validate()
	for _, want := range []string{"emit.Config.BufferSize:", "emit.Config.Overflow:", "emit.Config.MaxInFlight:", "emit.Config.AckTimeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want it to name %s", err, want)
		}
	}
}
