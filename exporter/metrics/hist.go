package metrics

import (
	"math"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Native histogram limits of the exposition format.
const (
	minSchema         = -4
	maxSchema         = 8
	nativeZeroThresh  = 2.938735877055719e-39 // 2^-128, client_golang's default
	defaultMaxBuckets = 160
)

// histLayout is the bucket layout shared by every tenant's histogram.
type histLayout struct {
	upper      []float64 // classic upper bounds, ascending, without +Inf
	native     bool
	schema     int32     // initial native schema
	maxBuckets int       // native buckets before the schema is reduced
	bounds     []float64 // frexp fraction bounds for schema > 0
}

func newHistLayout(buckets []float64, factor float64, maxBuckets int) *histLayout {
	l := &histLayout{upper: append([]float64(nil), buckets...), maxBuckets: maxBuckets}
	sort.Float64s(l.upper)
	if factor > 1 {
		l.native = true
		s := -math.Floor(math.Log2(math.Log2(factor)))
		l.schema = int32(math.Max(minSchema, math.Min(maxSchema, s)))
		if l.maxBuckets <= 0 {
			l.maxBuckets = defaultMaxBuckets
		}
	}
	return l
}

// boundsFor returns the frexp fraction bounds of a positive schema.
func boundsFor(schema int32) []float64 {
	n := 1 << schema
	b := make([]float64, n)
	for i := range b {
		b[i] = math.Exp2(float64(i)/float64(n) - 1)
	}
	return b
}

// hist is one histogram's state. It is guarded by its owner's mutex.
type hist struct {
	classic []uint64 // non-cumulative counts; the last one is +Inf
	count   uint64
	sum     float64
	zero    uint64         // native zero bucket
	schema  int32          // native schema in use (may drop below the layout's)
	pos     map[int]uint64 // native positive buckets; nil when native is off
	bounds  []float64      // cached boundsFor(schema), nil for schema <= 0
}

func newHist(l *histLayout) hist {
	h := hist{classic: make([]uint64, len(l.upper)+1)}
	if l.native {
		h.schema = l.schema
		h.pos = make(map[int]uint64)
		if h.schema > 0 {
			h.bounds = boundsFor(h.schema)
		}
	}
	return h
}

// observe adds v (seconds). It allocates only when a new native bucket
// makes the map grow.
func (h *hist) observe(l *histLayout, v float64) {
	if math.IsNaN(v) || v < 0 {
		v = 0
	}
	// Linear scan: ~11 buckets beat a binary search's branch misses.
	i := 0
	for i < len(l.upper) && v > l.upper[i] {
		i++
	}
	h.classic[i]++
	h.count++
	h.sum += v
	if h.pos == nil {
		return
	}
	if v <= nativeZeroThresh {
		h.zero++
		return
	}
	h.pos[nativeKey(v, h.schema, h.bounds)]++
	if len(h.pos) > l.maxBuckets && h.schema > minSchema {
		h.pos = reduceBuckets(h.pos, h.schema, h.schema-1)
		h.schema--
		h.bounds = nil
		if h.schema > 0 {
			h.bounds = boundsFor(h.schema)
		}
	}
}

// nativeKey is the index of the native bucket holding v > 0: bucket i
// covers (base^(i-1), base^i] with base = 2^(2^-schema).
func nativeKey(v float64, schema int32, bounds []float64) int {
	frac, exp := math.Frexp(v)
	if schema > 0 {
		return sort.SearchFloat64s(bounds, frac) + (exp-1)*len(bounds)
	}
	key := exp
	if frac == 0.5 {
		key--
	}
	off := (1 << -schema) - 1
	return (key + off) >> -schema
}

// reduceBuckets maps buckets of schema from to the coarser schema to.
func reduceBuckets(m map[int]uint64, from, to int32) map[int]uint64 {
	out := make(map[int]uint64, len(m))
	for k, c := range m {
		for s := from; s > to; s-- {
			k = (k + 1) >> 1 // ceil(k/2), also for negative k
		}
		out[k] += c
	}
	return out
}

// clone returns a deep copy.
func (h *hist) clone() hist {
	c := *h
	c.classic = append([]uint64(nil), h.classic...)
	if h.pos != nil {
		c.pos = make(map[int]uint64, len(h.pos))
		for k, v := range h.pos {
			c.pos[k] = v
		}
	}
	return c
}

// add adds o into h; both share a layout.
func (h *hist) add(o *hist) {
	for i, c := range o.classic {
		h.classic[i] += c
	}
	h.count += o.count
	h.sum += o.sum
	if h.pos == nil || o.pos == nil {
		return
	}
	h.zero += o.zero
	src := o.pos
	switch {
	case o.schema > h.schema:
		src = reduceBuckets(o.pos, o.schema, h.schema)
	case o.schema < h.schema:
		h.pos = reduceBuckets(h.pos, h.schema, o.schema)
		h.schema = o.schema
		h.bounds = nil
		if h.schema > 0 {
			h.bounds = boundsFor(h.schema)
		}
	}
	for k, c := range src {
		h.pos[k] += c
	}
}

// sub returns h minus base, where base is an earlier snapshot of the same
// histogram (so every count in base is <= the one in h).
func (h *hist) sub(base *hist) hist {
	d := h.clone()
	for i, c := range base.classic {
		d.classic[i] -= c
	}
	d.count -= base.count
	d.sum -= base.sum
	if d.sum < 0 {
		d.sum = 0
	}
	if d.pos == nil || base.pos == nil {
		return d
	}
	d.zero -= base.zero
	src := base.pos
	if base.schema > d.schema {
		src = reduceBuckets(base.pos, base.schema, d.schema)
	}
	for k, c := range src {
		if d.pos[k] -= c; d.pos[k] == 0 {
			delete(d.pos, k)
		}
	}
	return d
}

// histMetric is a const histogram with classic and, optionally, native
// buckets; client_golang has no constructor that carries both.
type histMetric struct {
	desc   *prometheus.Desc
	labels []*dto.LabelPair
	h      dto.Histogram
}

func (m *histMetric) Desc() *prometheus.Desc { return m.desc }

func (m *histMetric) Write(out *dto.Metric) error {
	out.Label = m.labels
	out.Histogram = &m.h
	return nil
}

// metric renders h for desc with the given label values.
func (h *hist) metric(l *histLayout, desc *prometheus.Desc, labelValues ...string) prometheus.Metric {
	m := &histMetric{desc: desc, labels: prometheus.MakeLabelPairs(desc, labelValues)}
	m.h.SampleCount = new(h.count)
	m.h.SampleSum = new(h.sum)
	bs := make([]dto.Bucket, len(l.upper))
	m.h.Bucket = make([]*dto.Bucket, len(l.upper))
	var cum uint64
	for i, ub := range l.upper {
		cum += h.classic[i]
		bs[i].CumulativeCount = new(cum)
		bs[i].UpperBound = new(ub)
		m.h.Bucket[i] = &bs[i]
	}
	if h.pos != nil {
		m.h.Schema = new(h.schema)
		m.h.ZeroThreshold = new(float64(nativeZeroThresh))
		m.h.ZeroCount = new(h.zero)
		m.h.PositiveSpan, m.h.PositiveDelta = nativeSpans(h.pos)
	}
	return m
}

// nativeSpans encodes sparse buckets as spans and count deltas.
func nativeSpans(m map[int]uint64) ([]*dto.BucketSpan, []int64) {
	if len(m) == 0 {
		return []*dto.BucketSpan{{Offset: new(int32(0)), Length: new(uint32(0))}}, nil
	}
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var spans []*dto.BucketSpan
	deltas := make([]int64, 0, len(keys))
	var prevCount int64
	next := 0
	for i, k := range keys {
		if i == 0 || k != next {
			off := k
			if i > 0 {
				off = k - next
			}
			spans = append(spans, &dto.BucketSpan{Offset: new(int32(off)), Length: new(uint32(0))})
		}
		*spans[len(spans)-1].Length++
		c := int64(m[k])
		deltas = append(deltas, c-prevCount)
		prevCount = c
		next = k + 1
	}
	return spans, deltas
}
