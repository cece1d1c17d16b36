package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDefaultSigningKeyWithoutHome: with neither $XDG_CONFIG_HOME nor
// $HOME, the default key lives in a 0700 directory of the user's under
// the temporary directory, and a directory others can read is refused.
func TestDefaultSigningKeyWithoutHome(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("HOME", "")
	path, err := DefaultSigningKeyFile()
	if err != nil || !strings.HasPrefix(path, tmp) {
		t.Fatalf("got %q, %v; want a path under %s", path, err, tmp)
	}
	if err := EnsureSigningKey(path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("key directory: %v %v, want mode 0700", fi, err)
	}
	if err := os.Chmod(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := EnsureSigningKey(path + ".2"); err == nil {
		t.Error("a key directory others can read was accepted")
	}
}
