package anomaly

import "math"

const (
	hoursPerWeek = 168
	weekBeta     = 0.5  // weight of the newest week in an hour-of-week slot
	dayBeta      = 0.25 // weight of the newest day in an hour-of-day slot
)

// Seasonal modes, from least to most history.
const (
	modeFlat uint8 = iota // no history: the index is 1 and the level EWMA is the baseline
	modeDay               // >= 1 day: hour-of-day profile
	modeWeek              // >= 1 week: hour-of-week profile
)

// profile is a tenant's seasonal shape (about 400 bytes): hourly event
// totals per hour of the week and per hour of the day, log-quantized to
// 16 bits and averaged over weeks (days). The seasonal index at a minute is
// the interpolated profile value over the profile mean. Storing the same
// window 1, 2 and 3 weeks ago at minute resolution would take 90 KiB per
// series; this keeps the weekly shape in under 400 bytes.
type profile struct {
	week    [hoursPerWeek]uint16
	day     [24]uint16
	weekSum float32
	daySum  float32
	acc     float32 // events in the hour being accumulated
	hour    int32   // hour being accumulated (hours since epoch); -1 none
	seeded  int32   // last hour seeded by warm start
	hours   int32   // hours folded
	mode    uint8
	unusual bool // a usage series was not calm during this hour
}

func encodeQ(v float64) uint16 {
	if !(v > 0) {
		return 1
	}
	q := math.Log2(v+1)*1000 + 1.5
	if q > math.MaxUint16 {
		q = math.MaxUint16
	}
	return uint16(q)
}

func decodeQ(q uint16) float64 {
	if q == 0 {
		return 0
	}
	return math.Exp2(float64(q-1)/1000) - 1
}

// hourOfWeek returns 0 for Monday 00:00 UTC. The Unix epoch was a Thursday.
func hourOfWeek(hour int32) int {
	return int((int64(hour) + 72) % hoursPerWeek)
}

// fold adds the finished hour's total to the profile.
func (p *profile) fold() {
	v := float64(p.acc)
	hw, hd := hourOfWeek(p.hour), int(p.hour%24)
	vw := v
	if p.unusual && p.week[hw] == 0 && p.day[hd] != 0 {
		vw = decodeQ(p.day[hd]) // don't seed a weekly slot from an anomalous hour
	}
	p.week[hw], p.weekSum = blend(p.week[hw], vw, weekBeta, p.unusual, p.weekSum)
	p.day[hd], p.daySum = blend(p.day[hd], v, dayBeta, p.unusual, p.daySum)
	p.hours++
	p.acc, p.unusual = 0, false
}

// blend folds v into slot q with weight beta, clipped so one unusual hour
// moves the slot little, and keeps sum up to date.
func blend(q uint16, v, beta float64, unusual bool, sum float32) (uint16, float32) {
	if q == 0 {
		nq := encodeQ(v)
		return nq, sum + float32(decodeQ(nq))
	}
	old := decodeQ(q)
	lo, hi := 0.5, 2.0
	if unusual {
		lo, hi = 0.8, 1.25
	}
	v = math.Min(math.Max(v, old*lo), old*hi+1)
	nq := encodeQ(old + beta*(v-old))
	return nq, sum + float32(decodeQ(nq)-old)
}

// nextMode reports the mode the folded history allows.
func (p *profile) nextMode() uint8 {
	switch {
	case p.hours >= hoursPerWeek:
		return modeWeek
	case p.hours >= 24:
		return modeDay
	}
	return modeFlat
}

// index returns the seasonal index at minute m under mode.
func (p *profile) index(m int32, mode uint8) float64 {
	var slots []uint16
	var mean float64
	var h int
	hour := floorDiv(m, 60)
	switch mode {
	case modeWeek:
		slots, mean, h = p.week[:], float64(p.weekSum)/hoursPerWeek, hourOfWeek(hour)
	case modeDay:
		slots, mean, h = p.day[:], float64(p.daySum)/24, int(hour%24)
	default:
		return 1
	}
	if !(mean > 0) {
		return 1
	}
	n := len(slots)
	pos := (float64(m-hour*60) + 0.5) / 60 // position inside the hour, slot values sit at 0.5
	// Lean halfway toward the neighbour hour at the edges: smooth shapes
	// follow, and a step between hours (a weekend ending at midnight) moves
	// the baseline only a quarter of the way early.
	v := decodeQ(slots[h])
	if pos < 0.5 {
		prev := decodeQ(slots[(h+n-1)%n])
		v += (prev - v) * (0.5 - pos) / 2
	} else {
		next := decodeQ(slots[(h+1)%n])
		v += (next - v) * (pos - 0.5) / 2
	}
	idx := v / mean
	return math.Max(idx, 0.02)
}

func floorDiv(a, b int32) int32 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}
