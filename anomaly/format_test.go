package anomaly

import (
	"math"
	"testing"
)

func TestFormatValue(t *testing.T) {
	for _, c := range []struct {
		in   float64
		want string
	}{
		{11.913, "11.9"},
		{3.9, "3.9"},
		{5.08, "5.08"},
		{0.25, "0.25"},
		{0.0432, "0.0432"},
		{298.4, "298"},
		{999.6, "1000"},
		{1523.4, "1523"},
		{1_250_000, "1250000"},
		{0.00000000001, "0"},
		{20, "20"},
		{0, "0"},
		{-2.5, "-2.5"},
		{math.Inf(1), "+Inf"},
	} {
		if got := FormatValue(c.in); got != c.want {
			t.Errorf("FormatValue(%v): got %q, want %q", c.in, got, c.want)
		}
	}
}
