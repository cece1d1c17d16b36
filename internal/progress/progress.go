// Package progress shows how a long CLI command is doing, on stderr: on a
// terminal one status line redrawn every 200 ms and erased at the end; on
// anything else (a log, a pipe) one plain line every so often, or nothing.
// The command's final summary is its own to print.
package progress

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Reporter redraws a status line from a render func until Stop.
type Reporter struct {
	w      io.Writer
	render func() string
	live   bool
	done   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

// Start reports on w while enabled: render's line every 200 ms when w is a
// terminal, else every every (0: never). render is called from another
// goroutine, so it must read shared state safely.
func Start(w io.Writer, enabled bool, every time.Duration, render func() string) *Reporter {
	r := &Reporter{w: w, render: render, live: enabled && isTerminal(w), done: make(chan struct{})}
	period := every
	if r.live {
		period = 200 * time.Millisecond
	}
	if !enabled || period <= 0 {
		return r
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-r.done:
				if r.live {
					fmt.Fprint(r.w, "\r\033[K")
				}
				return
			case <-t.C:
				if r.live {
					fmt.Fprint(r.w, "\r\033[K"+r.render())
				} else {
					fmt.Fprintln(r.w, r.render())
				}
			}
		}
	}()
	return r
}

// Stop ends the reports and erases the status line; it may be called more
// than once.
func (r *Reporter) Stop() {
	r.once.Do(func() { close(r.done) })
	r.wg.Wait()
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Bytes formats n as B, KiB, MiB or GiB.
func Bytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
