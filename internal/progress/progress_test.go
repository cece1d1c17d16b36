package progress

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestPlainLinesWhenNotATerminal(t *testing.T) {
	var out syncBuffer
	r := Start(&out, true, 20*time.Millisecond, func() string { return "42 done" })
	time.Sleep(70 * time.Millisecond)
	r.Stop()
	r.Stop()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 2 || lines[0] != "42 done" || strings.Contains(out.String(), "\033") {
		t.Errorf("got %q, want several plain lines without escapes", out.String())
	}
	var quiet syncBuffer
	Start(&quiet, false, time.Millisecond, func() string { return "x" }).Stop()
	Start(&quiet, true, 0, func() string { return "x" }).Stop()
	if quiet.String() != "" {
		t.Errorf("disabled or every=0 off a terminal printed %q", quiet.String())
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{10: "10 B", 2048: "2.0 KiB", 3 << 20: "3.0 MiB", 5 << 30: "5.0 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d): got %q, want %q", n, got, want)
		}
	}
}
