package anomaly

import (
	"math"
	"testing"
)

// TestProfileQuantization checks the 8-bit log slots: values read back
// within 1.1%, a larger value moves the scale without disturbing the
// others beyond rounding, and the kept sum matches the slots.
func TestProfileQuantization(t *testing.T) {
	var p profile
	w := p.weekSlots()
	vals := []float64{0, 3, 40, 1000, 52_000, 7, 250_000}
	for i, v := range vals {
		w.set(i, v)
	}
	top := vals[len(vals)-1]
	for i, v := range vals {
		got := w.value(i)
		switch {
		case v < top/240: // below the floor of the scale: reads as the floor
			if got > top/200 {
				t.Errorf("slot %d: %g reads %g, want at most the floor %g", i, v, got, top/200)
			}
		case math.Abs(got-v) > 0.011*v+0.02:
			t.Errorf("slot %d: %g reads %g, want within 1.1%%", i, v, got)
		}
	}
	var sum float64
	for i := range p.week {
		sum += w.value(i)
	}
	if math.Abs(sum-float64(p.weekSum)) > 1e-3*sum {
		t.Errorf("kept sum %g, slots sum %g", p.weekSum, sum)
	}
	// A flat profile gives index 1 everywhere.
	var q profile
	for h := range q.week {
		q.weekSlots().set(h, 5000)
	}
	if idx := q.index(600, modeWeek); math.Abs(idx-1) > 1e-3 {
		t.Errorf("flat profile index %g, want 1", idx)
	}
}

// TestExp2Code: the table decode of slot codes is 2^(k/32) within one ulp,
// over every code a profile can hold.
func TestExp2Code(t *testing.T) {
	for k := 0; k <= 1<<14+256; k++ {
		got, want := exp2Code(k), math.Exp2(float64(k)/qPerOctave)
		if math.Abs(got-want) > want*2.3e-16 {
			t.Fatalf("code %d: got %v, want %v", k, got, want)
		}
	}
}
