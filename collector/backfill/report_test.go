package backfill

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestProgressLine(t *testing.T) {
	p := Progress{Bytes: 50, Read: 20, Stored: 15, Dups: 3, Bad: 2}
	tests := []struct {
		size int64
		want string
	}{
		{0, "import: 20 read, 15 stored, 3 duplicates, 2 rejected, 10 events/s"},
		{100, "[###############...............]  50% import: 20 read"},
	}
	for _, tt := range tests {
		if got := p.Line(tt.size, 2*time.Second); !strings.HasPrefix(got, tt.want) {
			t.Errorf("size %d: got %q, want it to start with %q", tt.size, got, tt.want)
		}
	}
}

func TestSummaryWriteText(t *testing.T) {
	clean := Summary{Read: 4, Stored: 4, Elapsed: time.Second}
	var b bytes.Buffer
	clean.WriteText(&b, "in.ndjson")
	if got, want := b.String(), "import in.ndjson: read 4, stored 4, duplicates 0, rejected 0 in 1s (4 events/s)\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	bad := Summary{Read: 3, Rejected: 3, Errors: []LineError{{Line: 2, Err: "bad kind"}}, Elapsed: time.Second}
	b.Reset()
	bad.WriteText(&b, "in.csv")
	for _, want := range []string{"rejected 3", "rejected by reason:", "  line 2: bad kind\n", "  ... and 2 more\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("got %q; want it to hold %q", b.String(), want)
		}
	}
}
