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

// profile is a tenant's seasonal shape (226 bytes): hourly event totals
// per hour of the week and per hour of the day, averaged over weeks (days)
// and stored as 8-bit log codes (steps of 2^(1/32), 2.2%, so a stored
// value is within 1.1%) against a per-profile scale that follows the
// largest slot; a slot more than 240x below it reads as that floor. The
// seasonal index at a minute is the interpolated profile value over the
// profile mean. Storing the same window 1, 2 and 3 weeks ago at minute
// resolution would take 90 KiB per series; this keeps the weekly shape in
// under 200 bytes.
type profile struct {
	week    [hoursPerWeek]uint8
	day     [24]uint8
	weekOff int16 // absolute code of slot code 1, see qslots
	dayOff  int16
	weekSum float32
	daySum  float32
	acc     float32 // events in the hour being accumulated
	hour    int32   // hour being accumulated (hours since epoch); -1 none
	seeded  int32   // last hour seeded by warm start
	hours   int32   // hours folded
	mode    uint8
	unusual bool // a usage series was not calm during this hour
}

// qPerOctave is the number of codes per doubling.
const qPerOctave = 32

// absCode is the absolute log code of v >= 0: round(32 log2(v+1)).
func absCode(v float64) int {
	if !(v > 0) {
		return 0
	}
	return int(math.Min(math.Log2(v+1)*qPerOctave+0.5, 1<<14))
}

// qslots is a view of one profile's 8-bit slots: code 0 is an empty slot,
// code c >= 1 is the absolute code c-1+off. sum is the sum of the decoded
// values.
type qslots struct {
	s   []uint8
	off *int16
	sum *float32
}

func (q qslots) value(i int) float64 {
	c := q.s[i]
	if c == 0 {
		return 0
	}
	return exp2Code(int(c)-1+int(*q.off)) - 1
}

// exp2Code returns 2^(k/32) for an absolute code k >= 0: the fraction from
// exp2Frac, the power of two set in the exponent bits. The profile is read
// for every tenant every minute, and math.Exp2 was a tenth of a cycle.
func exp2Code(k int) float64 {
	return math.Float64frombits(uint64(1023+k/qPerOctave)<<52) * exp2Frac[k%qPerOctave]
}

// exp2Frac[r] is 2^(r/32), a table of constants.
var exp2Frac = [qPerOctave]float64{
	1.0, 1.0218971486541166, 1.0442737824274138, 1.0671404006768237,
	1.0905077326652577, 1.1143867425958924, 1.1387886347566916, 1.1637248587775775,
	1.189207115002721, 1.215247359980469, 1.241857812073484, 1.2690509571917332,
	1.2968395546510096, 1.3252366431597413, 1.3542555469368927, 1.383909881963832,
	1.4142135623730951, 1.4451808069770467, 1.4768261459394993, 1.5091644275934228,
	1.5422108254079407, 1.5759808451078865, 1.6104903319492543, 1.645755478153965,
	1.681792830507429, 1.718619298122478, 1.7562521603732995, 1.7947090750031072,
	1.8340080864093424, 1.8741676341103, 1.9152065613971474, 1.9571441241754002,
}

// set stores v in slot i. A value above the top code moves the scale up
// (every code down by the same amount, the smallest clipped to 1).
func (q qslots) set(i int, v float64) {
	a := absCode(v)
	if shift := a - int(*q.off) + 1 - 255; shift > 0 {
		*q.off += int16(shift)
		var sum float64
		for j, c := range q.s {
			if c != 0 {
				q.s[j] = uint8(max(1, int(c)-shift))
				sum += q.value(j)
			}
		}
		*q.sum = float32(sum)
	}
	old := q.value(i)
	q.s[i] = uint8(max(1, a-int(*q.off)+1))
	*q.sum += float32(q.value(i) - old)
}

// hourOfWeek returns 0 for Monday 00:00 UTC. The Unix epoch was a Thursday.
func hourOfWeek(hour int32) int {
	return int((int64(hour) + 72) % hoursPerWeek)
}

func (p *profile) weekSlots() qslots { return qslots{p.week[:], &p.weekOff, &p.weekSum} }
func (p *profile) daySlots() qslots  { return qslots{p.day[:], &p.dayOff, &p.daySum} }

// fold adds the finished hour's total to the profile.
func (p *profile) fold() {
	v := float64(p.acc)
	hw, hd := hourOfWeek(p.hour), int(p.hour%24)
	w, d := p.weekSlots(), p.daySlots()
	vw := v
	if p.unusual && p.week[hw] == 0 && p.day[hd] != 0 {
		vw = d.value(hd) // don't seed a weekly slot from an anomalous hour
	}
	blend(w, hw, vw, weekBeta, p.unusual)
	blend(d, hd, v, dayBeta, p.unusual)
	p.hours++
	p.acc, p.unusual = 0, false
}

// blend folds v into slot i with weight beta, clipped so one unusual hour
// moves the slot little.
func blend(q qslots, i int, v, beta float64, unusual bool) {
	if q.s[i] == 0 {
		q.set(i, v)
		return
	}
	old := q.value(i)
	lo, hi := 0.5, 2.0
	if unusual {
		lo, hi = 0.8, 1.25
	}
	v = math.Min(math.Max(v, old*lo), old*hi+1)
	q.set(i, old+beta*(v-old))
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
	var slots qslots
	var mean float64
	var h int
	hour := floorDiv(m, 60)
	switch mode {
	case modeWeek:
		slots, mean, h = p.weekSlots(), float64(p.weekSum)/hoursPerWeek, hourOfWeek(hour)
	case modeDay:
		slots, mean, h = p.daySlots(), float64(p.daySum)/24, int(hour%24)
	default:
		return 1
	}
	if !(mean > 0) {
		return 1
	}
	n := len(slots.s)
	pos := (float64(m-hour*60) + 0.5) / 60 // position inside the hour, slot values sit at 0.5
	// Lean halfway toward the neighbour hour at the edges: smooth shapes
	// follow, and a step between hours (a weekend ending at midnight) moves
	// the baseline only a quarter of the way early.
	v := slots.value(h)
	if pos < 0.5 {
		prev := slots.value((h + n - 1) % n)
		v += (prev - v) * (0.5 - pos) / 2
	} else {
		next := slots.value((h + 1) % n)
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
