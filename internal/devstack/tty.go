package devstack

import (
	"context"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// StopKeys makes Ctrl-C (and q) on the terminal stop dev by calling stop,
// without a signal. Ctrl-C on a terminal sends SIGINT to every process of
// the foreground group: under `make demo`, make gets it too, and make then
// exits 130 whatever dev's own status. So while dev runs on a terminal,
// the terminal stops turning Ctrl-C into a signal (ISIG off, echo and line
// editing off); dev reads the keys itself and stops cleanly, and make sees
// it exit 0. The returned restore puts the terminal back; it is also
// called on the first stop key, so a second Ctrl-C is a plain SIGINT
// again. When stdin is not a terminal nothing changes: SIGINT and SIGTERM
// stop dev as before.
func StopKeys(ctx context.Context, stop func()) (restore func()) {
	fd := int(os.Stdin.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return func() {}
	}
	// Only the terminal's foreground job may change it (a background one
	// would be stopped by SIGTTOU), and only it gets the keys.
	if pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP); err != nil || pgrp != unix.Getpgrp() {
		return func() {}
	}
	raw := *old
	raw.Lflag &^= unix.ISIG | unix.ICANON | unix.ECHO
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return func() {}
	}
	restored := make(chan struct{})
	var once sync.Once
	restoreOnce := func() {
		once.Do(func() {
			close(restored)
			_ = unix.IoctlSetTermios(fd, unix.TCSETS, old)
		})
	}
	keys := make(chan byte)
	go func() {
		// This read blocks until a key arrives; the goroutine ends with
		// the process (stdin cannot be unblocked portably).
		buf := make([]byte, 1)
		for {
			n, err := os.Stdin.Read(buf)
			if err != nil {
				return
			}
			if n == 1 {
				select {
				case keys <- buf[0]:
				case <-restored:
					return
				}
			}
		}
	}()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-restored:
				return
			case k := <-keys:
				switch k {
				case 0x03, 0x1c, 'q', 'Q': // Ctrl-C, Ctrl-\, q
					restoreOnce()
					stop()
					return
				}
			}
		}
	}()
	return restoreOnce
}
