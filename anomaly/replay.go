package anomaly

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
)

// Episode is one alert episode as replay prints it (NDJSON, one per line).
type Episode struct {
	TenantID    string     `json:"tenant_id"`
	Metric      string     `json:"metric"`
	Kind        string     `json:"kind"`
	Integration string     `json:"integration,omitempty"`
	StartsAt    time.Time  `json:"starts_at"`
	EndsAt      *time.Time `json:"ends_at"` // null when still firing at the end of the input
	DetectedAt  time.Time  `json:"detected_at"`
	Observed    float64    `json:"observed"`
	Baseline    float64    `json:"baseline"`
	Ratio       float64    `json:"ratio"`
	Severity    Severity   `json:"severity"`
	Threshold   string     `json:"threshold,omitempty"` // spend_cap only
	// Scale is the window length the episode fired on and is resolved on
	// ("1m", "5m", "15m", "60m"); empty for spend_cap.
	Scale       string `json:"scale,omitempty"`
	Fingerprint string `json:"fingerprint"`
	// ResolvedAt is when the resolve was sent (the replay clock), null
	// while firing; EndsAt is when the rate was back.
	ResolvedAt *time.Time `json:"resolved_at,omitempty"`
}

// episodeSink pairs firing and resolved alerts into episodes.
type episodeSink struct {
	now  time.Time
	open map[string]int // fingerprint -> index in eps
	eps  []Episode
}

func (s *episodeSink) Send(_ context.Context, a Alert) {
	if i, ok := s.open[a.Fingerprint]; ok && a.Status == StatusResolved {
		end, at := a.EndsAt, s.now
		s.eps[i].EndsAt, s.eps[i].ResolvedAt = &end, &at
		delete(s.open, a.Fingerprint)
		return
	}
	if a.Status != StatusFiring {
		return
	}
	s.open[a.Fingerprint] = len(s.eps)
	s.eps = append(s.eps, Episode{
		TenantID: a.TenantID, Metric: a.Metric, Kind: a.Kind, Integration: a.Integration,
		StartsAt: a.StartsAt, DetectedAt: s.now, Observed: a.Observed, Baseline: a.Baseline,
		Ratio: a.Ratio, Severity: a.Severity, Threshold: a.Labels[LabelThreshold], Scale: a.Labels[LabelScale], Fingerprint: a.Fingerprint,
	})
}

// Replayer drives a Detector on a simulated clock: the same detection code
// as the daemon, fed from files or stored history.
type Replayer struct {
	d        *Detector
	sink     *episodeSink
	lateness int64
	every    int64 // eval_interval in seconds
	clock    int64 // seconds: max event time seen
	curMin   int64 // rollup minute being filled
	started  bool
	Late     int // items that arrived after their window closed

	firstSec, lastSec int64 // the span of the input's times
}

// Span is the time range the input covered, by one-minute window: the
// start of the first and of the last window, and how many windows lie
// from one to the other. Replay can only judge the windows after a
// series' warmup (anomaly.warmup_windows).
type Span struct {
	First, Last time.Time
	Windows     int
}

// Span returns the span of what was fed so far; zero before any input.
func (r *Replayer) Span() Span {
	if !r.started {
		return Span{}
	}
	f, l := floorDiv64(r.firstSec, 60), floorDiv64(r.lastSec, 60)
	return Span{First: time.Unix(f*60, 0).UTC(), Last: time.Unix(l*60, 0).UTC(), Windows: int(l-f) + 1}
}

// seen widens the span to sec.
func (r *Replayer) seen(sec int64) {
	if !r.started || sec < r.firstSec {
		r.firstSec = sec
	}
	if !r.started || sec > r.lastSec {
		r.lastSec = sec
	}
}

// NewReplayer returns a replayer with a fresh detector built with opts.
func NewReplayer(cfg Config, opts ...Option) (*Replayer, error) {
	s := &episodeSink{open: map[string]int{}}
	d, err := New(cfg, s, opts...)
	if err != nil {
		return nil, err
	}
	return &Replayer{d: d, sink: s, lateness: int64(cfg.Lateness / time.Second), every: max(1, int64(cfg.EvalInterval/time.Second))}, nil
}

// Detector returns the replayer's detector (for warm seeding in tests).
func (r *Replayer) Detector() *Detector { return r.d }

func (r *Replayer) advance(sec int64, detectedAt time.Time) {
	r.sink.now = detectedAt
	r.d.Advance(context.Background(), time.Unix(sec, 0))
}

// Event feeds one event; the clock follows the latest event time and
// evaluates, as the daemon does, every eval_interval (the fast path sees
// the open window) and whenever a window closes.
func (r *Replayer) Event(e *event.Event, cost float64) {
	sec := e.Time.Unix()
	r.seen(sec)
	if !r.started || sec > r.clock {
		if r.started && (floorDiv64(sec-r.lateness, 60) != floorDiv64(r.clock-r.lateness, 60) ||
			floorDiv64(sec, r.every) != floorDiv64(r.clock, r.every)) {
			r.advance(sec, time.Unix(sec, 0).UTC())
		}
		r.clock, r.started = sec, true
	}
	if !r.d.observe(e, cost) {
		r.Late++
	}
}

// Rollup feeds one per-minute rollup. Rollups must come in minute order
// (within the lateness); a minute is evaluated when a later one arrives,
// and its alerts count as detected at the end of that minute.
func (r *Replayer) Rollup(ro *Rollup) {
	m := floorDiv64(ro.Minute.Unix(), 60)
	r.seen(ro.Minute.Unix())
	if !r.started {
		r.curMin, r.started = m, true
	}
	if m-r.curMin > 2 {
		r.closeRollupMinute() // close the last filled minute, then jump the gap
		r.curMin = m - 1
	}
	for r.curMin < m {
		r.closeRollupMinute()
	}
	if !r.d.ObserveRollup(ro) {
		r.Late++
	}
}

func (r *Replayer) closeRollupMinute() {
	end := (r.curMin + 1) * 60
	r.advance(end+r.lateness, time.Unix(end, 0).UTC())
	r.curMin++
}

// Finish evaluates the remaining windows (and quiet periods, up to flush
// after the last input) and returns the episodes in detection order.
func (r *Replayer) Finish(flush time.Duration) []Episode {
	if r.started {
		last := r.clock
		if r.curMin*60 > last {
			last = r.curMin * 60
		}
		r.advance(last+60+r.lateness, time.Unix(last+60, 0).UTC())
		for t := int64(0); t < int64(flush/time.Second); t += 60 {
			r.advance(last+120+t+r.lateness, time.Unix(last+120+t, 0).UTC())
		}
	}
	eps := r.sink.eps
	sort.SliceStable(eps, func(i, j int) bool { return eps[i].DetectedAt.Before(eps[j].DetectedAt) })
	return eps
}

// LineError is a malformed input line.
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// ReplayOptions controls ReplayReader.
type ReplayOptions struct {
	// Strict stops at the first malformed line instead of reporting it and
	// going on.
	Strict bool
	// OnError is called for each malformed line when not Strict.
	OnError func(*LineError)
	// Cost prices an NDJSON event; nil prices it at 0.
	Cost func(e *event.Event) float64
	// Flush is how long after the last input quiet periods keep being
	// evaluated, so that ended spikes resolve. Default 15m.
	Flush time.Duration
	// Detector are options of the replay's detector, such as
	// WithTenantPlan.
	Detector []Option
	// Span, when set, receives the span of the input (see Replayer.Span).
	Span *Span
}

// maxLine bounds one input line.
const maxLine = 1 << 20

// ReplayReader replays NDJSON events or CSV rollups from in (the format is
// detected from the first non-blank line) and returns the episodes.
func ReplayReader(ctx context.Context, cfg Config, in io.Reader, opt ReplayOptions) ([]Episode, error) {
	r, err := NewReplayer(cfg, opt.Detector...)
	if err != nil {
		return nil, err
	}
	if opt.Flush == 0 {
		opt.Flush = 15 * time.Minute
	}
	br := bufio.NewReaderSize(in, 64<<10)
	var (
		lineNo int
		csv    *CSVHeader
		isJSON bool
		known  bool
		ev     event.Event
		ro     Rollup
	)
	for {
		line, tooLong, err := readLine(br)
		if err == io.EOF && line == nil {
			break
		}
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("read input: %w", err)
		}
		lineNo++
		if lineNo%4096 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var perr error
		trimmed := bytes.TrimSpace(line)
		switch {
		case tooLong:
			perr = fmt.Errorf("line longer than %d bytes", maxLine)
		case len(trimmed) == 0:
			continue
		case !known:
			known = true
			if trimmed[0] == '{' {
				isJSON = true
				perr = r.eventLine(trimmed, &ev, opt.Cost)
			} else {
				csv, perr = ParseCSVHeader(string(trimmed))
				if perr != nil {
					return nil, &LineError{Line: lineNo, Err: perr}
				}
			}
		case isJSON:
			perr = r.eventLine(trimmed, &ev, opt.Cost)
		default:
			if perr = csv.Parse(trimmed, &ro); perr == nil {
				r.Rollup(&ro)
			}
		}
		if perr != nil {
			le := &LineError{Line: lineNo, Err: perr}
			if opt.Strict {
				return nil, le
			}
			if opt.OnError != nil {
				opt.OnError(le)
			}
		}
		if err == io.EOF {
			break
		}
	}
	if opt.Span != nil {
		*opt.Span = r.Span()
	}
	return r.Finish(opt.Flush), nil
}

func (r *Replayer) eventLine(line []byte, e *event.Event, cost func(*event.Event) float64) error {
	if err := ParseEventLine(line, e); err != nil {
		return err
	}
	c := 0.0
	if cost != nil {
		c = cost(e)
	}
	r.Event(e, c)
	return nil
}

// ParseEventLine decodes one NDJSON v1 event and checks the fields the
// detector relies on (the time window is not checked: replay is history).
func ParseEventLine(line []byte, e *event.Event) error {
	if len(line) > event.MaxSize {
		return fmt.Errorf("event larger than %d bytes", event.MaxSize)
	}
	if verr := event.Decode(line, e); verr != nil {
		return verr
	}
	switch {
	case e.ID == "" || len(e.ID) > event.MaxIDLen:
		return errors.New("bad id")
	case !event.ValidTenantID(e.TenantID):
		return errors.New("bad tenant_id")
	case !event.ValidKindName(e.Kind):
		return errors.New("bad kind")
	case e.Time.IsZero():
		return errors.New("missing time")
	case !(e.Quantity >= 0 && e.Quantity <= event.MaxQuantity):
		return fmt.Errorf("bad quantity: must be from 0 to %d", int64(event.MaxQuantity))
	case !(e.LatencyMs >= 0 && e.LatencyMs <= event.MaxLatencyMs):
		return fmt.Errorf("bad latency_ms: must be from 0 to %.0f", event.MaxLatencyMs)
	}
	return nil
}

// readLine returns the next line without its newline; a line longer than
// maxLine is consumed and reported as tooLong.
func readLine(br *bufio.Reader) (line []byte, tooLong bool, err error) {
	var buf []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(buf)+len(chunk) > maxLine {
			tooLong = true
		} else {
			buf = append(buf, chunk...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF && len(buf) == 0 && !tooLong {
			return nil, false, io.EOF
		}
		if tooLong {
			buf = []byte{}
		}
		return bytes.TrimRight(buf, "\r\n"), tooLong, err
	}
}

// CSVColumns is the rollup CSV header of the replay contract; cost and
// latency_count are optional extra columns.
var CSVColumns = []string{"minute", "tenant_id", "kind", "count", "quantity", "errors", "latency_p95_ms"}

// CSVHeader maps rollup CSV columns to positions.
type CSVHeader struct {
	idx    map[string]int
	fields int
}

// ParseCSVHeader checks that header has every contract column.
func ParseCSVHeader(header string) (*CSVHeader, error) {
	cols := strings.Split(strings.TrimPrefix(header, "\ufeff"), ",")
	h := &CSVHeader{idx: map[string]int{}, fields: len(cols)}
	for i, c := range cols {
		c = strings.TrimSpace(c)
		if _, dup := h.idx[c]; dup {
			return nil, fmt.Errorf("duplicate column %q", c)
		}
		h.idx[c] = i
	}
	var missing []string
	for _, c := range CSVColumns {
		if _, ok := h.idx[c]; !ok {
			missing = append(missing, c)
		}
	}
	if missing != nil {
		return nil, fmt.Errorf("CSV header lacks %s (want %s)", strings.Join(missing, ", "), strings.Join(CSVColumns, ","))
	}
	return h, nil
}

// Parse parses one CSV data line into r.
func (h *CSVHeader) Parse(line []byte, r *Rollup) error {
	var fields [16]string
	n := 0
	s := string(line)
	for n < len(fields) {
		i := strings.IndexByte(s, ',')
		if i < 0 {
			fields[n] = s
			n++
			break
		}
		fields[n] = s[:i]
		s = s[i+1:]
		n++
		if n == len(fields) {
			return fmt.Errorf("too many fields")
		}
	}
	if n != h.fields {
		return fmt.Errorf("got %d fields, want %d", n, h.fields)
	}
	get := func(c string) string {
		if i, ok := h.idx[c]; ok {
			return strings.TrimSpace(fields[i])
		}
		return ""
	}
	*r = Rollup{TenantID: get("tenant_id"), Kind: get("kind")}
	var err error
	if r.Minute, err = ParseMinute(get("minute")); err != nil {
		return err
	}
	if !event.ValidTenantID(r.TenantID) {
		return fmt.Errorf("bad tenant_id %q", truncate(r.TenantID))
	}
	if !event.ValidKindName(r.Kind) {
		return fmt.Errorf("bad kind %q", truncate(r.Kind))
	}
	if r.Count, err = parseUint("count", get("count")); err != nil {
		return err
	}
	if r.Errors, err = parseUint("errors", get("errors")); err != nil {
		return err
	}
	if r.Quantity, err = parseNonNeg("quantity", get("quantity")); err != nil {
		return err
	}
	if r.LatencyP95, err = parseNonNeg("latency_p95_ms", get("latency_p95_ms")); err != nil {
		return err
	}
	if r.Cost, err = parseNonNeg("cost", get("cost")); err != nil {
		return err
	}
	if r.LatencyCount, err = parseUint("latency_count", get("latency_count")); err != nil {
		return err
	}
	return nil
}

// ParseMinute parses RFC 3339 or Unix seconds, truncated to the minute.
func ParseMinute(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("empty minute")
	}
	if s[0] >= '0' && s[0] <= '9' && !strings.ContainsAny(s, "-:T") {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil || sec > 1<<36 {
			return time.Time{}, fmt.Errorf("bad minute %q", truncate(s))
		}
		return time.Unix(sec-sec%60, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil || t.Year() < 1970 || t.Year() > 3000 {
		return time.Time{}, fmt.Errorf("bad minute %q", truncate(s))
	}
	return t.UTC().Truncate(time.Minute), nil
}

func parseUint(field, s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad %s %q", field, truncate(s))
	}
	return v, nil
}

func parseNonNeg(field, s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || !finiteNonNeg(v) {
		return 0, fmt.Errorf("bad %s %q", field, truncate(s))
	}
	return v, nil
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
