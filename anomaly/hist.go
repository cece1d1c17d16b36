package anomaly

import "math"

// latBuckets log-spaced buckets at 2^(1/3) (26%) steps from 1 ms: bucket i
// holds [2^(i/3), 2^((i+1)/3)) ms; the first also holds < 1 ms and the last
// everything above ~20 s.
const latBuckets = 44

// latHist is a fixed-size per-window latency histogram (88 bytes). Counts
// saturate by halving every bucket, which keeps the quantiles.
type latHist [latBuckets]uint16

var cbrt2, cbrt4 = math.Cbrt(2), math.Cbrt(4)

// latBucket returns the bucket of ms without calling math.Log.
func latBucket(ms float64) int {
	if !(ms >= 1) { // also NaN
		return 0
	}
	frac, exp := math.Frexp(ms) // ms = frac * 2^exp, frac in [0.5, 1)
	m := frac * 2                  // [1, 2)
	i := (exp - 1) * 3
	if m >= cbrt4 {
		i += 2
	} else if m >= cbrt2 {
		i++
	}
	if i >= latBuckets {
		return latBuckets - 1
	}
	return i
}

// add records n samples of ms.
func (h *latHist) add(ms float64, n uint32) {
	if n == 0 {
		return
	}
	if n > 30000 {
		n = 30000
	}
	i := latBucket(ms)
	for uint32(h[i])+n > math.MaxUint16 {
		for j := range h {
			h[j] >>= 1
		}
	}
	h[i] += uint16(n)
}

// quantile returns the q quantile in ms (geometric interpolation inside the
// bucket), or 0 when empty.
func (h *latHist) quantile(q float64) float64 {
	var total uint32
	for _, c := range h {
		total += uint32(c)
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var cum float64
	for i, c := range h {
		next := cum + float64(c)
		if next >= rank && c > 0 {
			f := (rank - cum) / float64(c)
			return math.Exp2((float64(i) + f) / 3)
		}
		cum = next
	}
	return math.Exp2(float64(latBuckets) / 3)
}

func (h *latHist) reset() { *h = latHist{} }
