package billing

import (
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
)

// Output is where an export is written: stdout, or a file that appears
// only when the export completed (it is written under a temporary name
// beside it and renamed into place by Commit). It counts the bytes
// written, for progress.
type Output struct {
	w    io.Writer
	tmp  *os.File
	path string
	n    atomic.Int64
}

// NewOutput returns an Output to stdout when path is "" or "-", else to
// path. Close it on every path; after Commit, Close does nothing.
func NewOutput(path string, stdout io.Writer) (*Output, error) {
	if path == "" || path == "-" {
		return &Output{w: stdout}, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".partial-*")
	if err != nil {
		return nil, err
	}
	return &Output{w: tmp, tmp: tmp, path: path}, nil
}

func (o *Output) Write(b []byte) (int, error) {
	n, err := o.w.Write(b)
	o.n.Add(int64(n))
	return n, err
}

// Bytes is how many bytes were written so far.
func (o *Output) Bytes() int64 { return o.n.Load() }

// Commit syncs the file and renames it into place.
func (o *Output) Commit() error {
	if o.tmp == nil {
		return nil
	}
	if err := o.tmp.Sync(); err != nil {
		return err
	}
	if err := o.tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(o.tmp.Name(), o.path); err != nil {
		return err
	}
	o.tmp = nil
	return nil
}

// Close removes the partial file of an export that was not committed.
func (o *Output) Close() error {
	if o.tmp == nil {
		return nil
	}
	o.tmp.Close()
	err := os.Remove(o.tmp.Name())
	o.tmp = nil
	return err
}
