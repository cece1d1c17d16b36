package daemon

import (
	"strings"
	"testing"
)

func TestDecisionsReplicasRange(t *testing.T) {
	for _, c := range []struct {
		replicas int
		wantErr  bool
	}{
		{0, true}, {1, false}, {3, false}, {5, false}, {6, true}, {-1, true},
	} {
		cfg := DefaultConfig()
		cfg.Decisions.Replicas = c.replicas
		err := cfg.Validate()
		gotErr := err != nil && strings.Contains(err.Error(), "decisions.replicas: must be 1 to 5")
		if gotErr != c.wantErr {
			t.Errorf("decisions.replicas %d: got error %v, want error %v", c.replicas, err, c.wantErr)
		}
	}
	if got, want := DefaultConfig().Decisions.Replicas, 1; got != want {
		t.Errorf("default decisions.replicas: got %d, want %d", got, want)
	}
}
