package api

import (
	"math"
	"strconv"
	"testing"
)

// TestRoundDecimalsHidesFloatNoise: a rollup's float sum prints as the
// decimal it stands for, and values that need no rounding keep every digit.
func TestRoundDecimalsHidesFloatNoise(t *testing.T) {
	noisy := 0.0
	for range 1000 {
		noisy += 0.29
	}
	for _, c := range []struct {
		in   float64
		want string
	}{
		{287.2599999999999, "287.26"},
		{0.1 + 0.2, "0.3"},
		{noisy, "290"},
		{118500, "118500"},
		{0.000000001, "0.000000001"},
		{0.0000000004, "0"},
		{1 << 52, "4503599627370496"},
		{123456.123456789, "123456.123456789"},
	} {
		if got := strconv.FormatFloat(roundDecimals(c.in), 'f', -1, 64); got != c.want {
			t.Errorf("roundDecimals(%v): got %s, want %s", c.in, got, c.want)
		}
	}
	if got := roundDecimals(math.MaxFloat64 / 2); math.IsInf(got, 0) || math.IsNaN(got) {
		t.Errorf("roundDecimals of a huge value: got %v, want it finite", got)
	}
}
