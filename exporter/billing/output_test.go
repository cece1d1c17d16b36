package billing

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestOutputAppearsOnlyWhenCommitted(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bill.csv")
	for _, commit := range []bool{false, true} {
		out, err := NewOutput(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := out.Write([]byte("a,b\n")); err != nil {
			t.Fatal(err)
		}
		if got := out.Bytes(); got != 4 {
			t.Errorf("Bytes: got %d, want 4", got)
		}
		if commit {
			if err := out.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
		_, err = os.Stat(path)
		if got := err == nil; got != commit {
			t.Errorf("commit=%v: file exists %v, want %v", commit, got, commit)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, ".bill.csv.partial-*")); len(left) != 0 {
			t.Errorf("commit=%v: got partial files %v, want none", commit, left)
		}
	}
	var stdout bytes.Buffer
	out, err := NewOutput("-", &stdout)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = out.Write([]byte("x"))
	if err := out.Commit(); err != nil || stdout.String() != "x" {
		t.Errorf("stdout: got %q, %v; want %q", stdout.String(), err, "x")
	}
}
