// Command tenantguard is the per-tenant metering, observability and
// noisy-neighbour guard: one binary with the daemon (run), the local stack
// (dev), and the operator tools. This package only wires stages together.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/tenantguard/tenantguard/internal/redact"
)

// exitError carries a process exit status: 1 for findings or a failed
// check, 2 for usage and runtime errors.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// findings returns the error a command gives when it found problems.
func findings(err error) error { return &exitError{code: 1, err: err} }

func main() {
	a := newApp(os.Stdout, os.Stderr)
	err := a.root().Execute()
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "tenantguard:", redact.String(ee.err.Error()))
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "tenantguard:", redact.String(err.Error()))
	os.Exit(2)
}
