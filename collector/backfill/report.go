package backfill

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Line is the import's status after elapsed: a bar when the input's size
// is known (size > 0), and the counts.
func (s Progress) Line(size int64, elapsed time.Duration) string {
	line := fmt.Sprintf("import: %d read, %d stored, %d duplicates, %d rejected, %.0f events/s",
		s.Read, s.Stored, s.Dups, s.Bad, float64(s.Read)/max(elapsed.Seconds(), 1e-9))
	if size > 0 {
		frac := min(1, float64(s.Bytes)/float64(size))
		n := int(frac * 30)
		line = fmt.Sprintf("[%s%s] %3.0f%% %s", strings.Repeat("#", n), strings.Repeat(".", 30-n), frac*100, line)
	}
	return line
}

// WriteText writes the summary of importing input: the counts, and for
// rejected lines the reasons and the first errors.
func (sum Summary) WriteText(w io.Writer, input string) {
	rate := 0.0
	if sum.Elapsed > 0 {
		rate = float64(sum.Read) / sum.Elapsed.Seconds()
	}
	fmt.Fprintf(w, "import %s: read %d, stored %d, duplicates %d, rejected %d in %s (%.0f events/s)\n",
		input, sum.Read, sum.Stored, sum.Duplicates, sum.Rejected, sum.Elapsed.Round(time.Millisecond), rate)
	if sum.Rejected == 0 {
		return
	}
	fmt.Fprintf(w, "rejected by reason: %s\n", strings.Join(sum.ReasonCounts(), ", "))
	for _, e := range sum.Errors {
		fmt.Fprintf(w, "  %s\n", e)
	}
	if more := sum.Rejected - int64(len(sum.Errors)); more > 0 {
		fmt.Fprintf(w, "  ... and %d more\n", more)
	}
}
