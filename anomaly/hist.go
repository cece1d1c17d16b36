package anomaly

import "math"

// latBuckets log-spaced buckets at 2^(1/3) (26%) steps from 1 ms: bucket i
// holds [2^(i/3), 2^((i+1)/3)) ms; the first also holds < 1 ms and the last
// everything above ~10 s.
const latBuckets = 40

// latHist is a fixed-size per-window latency histogram (40 bytes). A full
// bucket halves every bucket, which keeps the quantiles to within the
// 1/128 resolution that matters for a P95 (the exact sample count is kept
// beside it).
type latHist [latBuckets]uint8

var cbrt2, cbrt4 = math.Cbrt(2), math.Cbrt(4)

// latBucket returns the bucket of ms without calling math.Log. Any float64
// maps to a bucket: NaN and values below 1 ms to the first, +Inf and values
// above ~10 s to the last.
func latBucket(ms float64) int {
	if !(ms >= 1) { // also NaN
		return 0
	}
	if ms > math.MaxFloat64 { // +Inf: Frexp would give exponent 0
		return latBuckets - 1
	}
	frac, exp := math.Frexp(ms) // ms = frac * 2^exp, frac in [0.5, 1)
	m := frac * 2               // [1, 2)
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
	i := latBucket(ms)
	for uint32(h[i])+n > math.MaxUint8 {
		if n > 128 {
			// Many samples at once (a rollup): scale the histogram and n
			// together so both fit.
			for j := range h {
				h[j] >>= 1
			}
			n = (n + 1) >> 1
			continue
		}
		for j := range h {
			h[j] >>= 1
		}
	}
	h[i] += uint8(n)
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
