package anomaly

import (
	"math"
	"strconv"
	"strings"
)

// FormatValue writes v for people: three significant digits, never an
// exponent, no trailing zeros, and whole numbers from 1000 up
// (11.913 -> "11.9", 0.0432 -> "0.0432", 1523.4 -> "1523"). Alert
// summaries and decision reasons use it.
func FormatValue(v float64) string {
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return strconv.FormatFloat(v, 'g', -1, 64)
	case v == 0:
		return "0"
	case math.Abs(v) >= 1000:
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	}
	places := min(9, max(0, 2-int(math.Floor(math.Log10(math.Abs(v))))))
	s := strconv.FormatFloat(v, 'f', places, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	if s == "-0" {
		s = "0"
	}
	return s
}
