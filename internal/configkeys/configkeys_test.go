package configkeys

import (
	"errors"
	"strings"
	"testing"
	"time"
)

type section struct {
	Timeout time.Duration `mapstructure:"timeout"`
	Rows    int           `mapstructure:"rows"`
}

type testConfig struct {
	Listen  string  `mapstructure:"listen"`
	Section section `mapstructure:"section"`
}

func TestDecodeReportsEveryProblem(t *testing.T) {
	cfg := testConfig{Listen: ":1", Section: section{Timeout: time.Second, Rows: 10}}
	settings := map[string]any{
		"listn":   "x",
		"section": map[string]any{"timeout": 5, "rows": -5, "extra": 1},
	}
	got := Decode(settings, &cfg, []string{"listen", "section.timeout", "section.rows"}, func() error {
		if cfg.Section.Rows < 0 {
			return errors.Join(errors.New("section.rows: must be >= 0"), errors.New("section.timeout: never shown, it failed to decode"))
		}
		return nil
	})
	want := []string{
		"listn: unknown key (did you mean listen?)",
		"section.extra: unknown key (did you mean section.rows?)",
		"section.timeout: 5 needs a unit, like 5s or 5ms",
		"section.rows: must be >= 0",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if cfg.Section.Timeout != time.Second {
		t.Errorf("a value that failed to decode changed the default: got %v", cfg.Section.Timeout)
	}
}

func TestUnknownEnv(t *testing.T) {
	got := UnknownEnv([]string{"APP_LISTEN=x", "APP_LISTN=y", "APP_SKIP=z", "OTHER=1"}, "APP_", []string{"listen"},
		func(name string) bool { return name == "APP_SKIP" })
	if len(got) != 1 || got[0].Name != "APP_LISTN" || got[0].Closest != "APP_LISTEN" {
		t.Errorf("got %v, want APP_LISTN (did you mean APP_LISTEN?)", got)
	}
}

func TestLeaves(t *testing.T) {
	type inner struct {
		Wait time.Duration `mapstructure:"wait"`
	}
	type squashed struct {
		Extra int `mapstructure:"extra"`
	}
	type cfg struct {
		Name     string    `mapstructure:"name"`
		At       time.Time `mapstructure:"at"`
		Inner    inner     `mapstructure:"inner"`
		squashed `mapstructure:",squash"`
		Skipped  string `mapstructure:"-"`
		Untagged string
	}
	got := map[string]any{}
	keys := Leaves(cfg{Name: "n", Inner: inner{Wait: time.Second}, squashed: squashed{Extra: 3}}, func(k string, v any) { got[k] = v })
	want := map[string]any{"name": "n", "at": time.Time{}, "inner.wait": time.Second, "extra": 3}
	if len(keys) != len(want) || len(got) != len(want) {
		t.Fatalf("got keys %v, values %v; want %v", keys, got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %v, want %v", k, got[k], v)
		}
	}
}
