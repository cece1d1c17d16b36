package anomaly

import (
	"math"
	"testing"
)

// TestLatBucketInRange checks every float64, finite or not, maps to a valid
// bucket: a stored +Inf latency once crashed the warm start with index -1.
func TestLatBucketInRange(t *testing.T) {
	for _, ms := range []float64{
		math.Inf(1), math.Inf(-1), math.NaN(), math.MaxFloat64, math.MaxFloat32,
		-1, 0, math.SmallestNonzeroFloat64, 0.5, 1, 1e9, 1e300,
	} {
		i := latBucket(ms)
		if i < 0 || i >= latBuckets {
			t.Errorf("latBucket(%v): got %d, want 0..%d", ms, i, latBuckets-1)
		}
		var h latHist
		h.add(ms, 3) // must not panic
	}
	if got := latBucket(math.Inf(1)); got != latBuckets-1 {
		t.Errorf("latBucket(+Inf): got %d, want the last bucket %d", got, latBuckets-1)
	}
}
