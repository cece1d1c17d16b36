package backfill

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
)

// ReasonInvalidCSV is the reason of a CSV line that is not a record of the
// header's columns (an import-only reason; the others are the collector's).
const ReasonInvalidCSV event.Reason = "invalid_csv"

// CSVColumns are the columns a CSV import reads: the wire fields, attrs as
// a JSON object of strings. id, tenant_id, kind and time are required;
// other columns (the events export's plan, unit_price, cost and
// price_version) are ignored: imported events are priced again.
var CSVColumns = []string{"id", "tenant_id", "kind", "time", "quantity", "service", "route", "user_id",
	"latency_ms", "status_code", "error", "attrs"}

// readBuffer is the input buffer; an NDJSON line longer than it is far past
// event.MaxSize and is rejected as too_large without being held.
const readBuffer = 256 << 10

// source parses one input into priced rows. Its counters are owned by the
// parsing goroutine, except bad, which progress reads.
type source struct {
	im      *Importer
	cr      *countingReader
	br      *bufio.Reader
	csv     *csv.Reader
	cols    []int // index of each CSVColumns entry in the header, -1 if absent
	width   int   // fields in the header
	line    int64
	read    int64
	bad     atomic.Int64
	reasons map[string]int64
	errs    []LineError
	buf     []byte
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// DetectFormat guesses a format from a file name (.csv; .ndjson, .jsonl,
// .json), then from the input's first byte that is not blank: '{' is
// NDJSON, anything else CSV. With neither, it returns FormatAuto.
func DetectFormat(name string, head []byte) Format {
	switch {
	case strings.HasSuffix(name, ".csv"):
		return FormatCSV
	case strings.HasSuffix(name, ".ndjson"), strings.HasSuffix(name, ".jsonl"), strings.HasSuffix(name, ".json"):
		return FormatNDJSON
	}
	b := bytes.TrimLeft(head, " \t\r\n\ufeff")
	switch {
	case len(b) == 0:
		return FormatAuto
	case b[0] == '{':
		return FormatNDJSON
	}
	return FormatCSV
}

func newSource(r io.Reader, f Format, im *Importer) (*source, error) {
	cr := &countingReader{r: r}
	s := &source{im: im, cr: cr, br: bufio.NewReaderSize(cr, readBuffer), reasons: map[string]int64{}}
	if f == FormatAuto {
		head, _ := s.br.Peek(512)
		if f = DetectFormat("", head); f == FormatAuto {
			f = FormatNDJSON // empty input: nothing to read either way
		}
	}
	switch f {
	case FormatNDJSON:
		return s, nil
	case FormatCSV:
		return s, s.csvHeader()
	}
	return nil, fmt.Errorf("format %q must be ndjson or csv", f)
}

func (s *source) csvHeader() error {
	s.csv = csv.NewReader(s.br)
	s.csv.FieldsPerRecord = -1
	s.csv.ReuseRecord = true
	header, err := s.csv.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("csv: empty input, want a header row")
		}
		return fmt.Errorf("csv header: %w", err)
	}
	s.line, s.width = 1, len(header)
	index := map[string]int{}
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		if _, dup := index[h]; dup {
			return fmt.Errorf("csv header: column %q appears twice", h)
		}
		index[h] = i
	}
	s.cols = make([]int, len(CSVColumns))
	var missing []string
	for i, c := range CSVColumns {
		j, ok := index[c]
		if !ok {
			j = -1
			if i < 4 {
				missing = append(missing, c)
			}
		}
		s.cols[i] = j
	}
	if len(missing) > 0 {
		return fmt.Errorf("csv header: missing required column(s) %s (the header names wire fields: %s)",
			strings.Join(missing, ", "), strings.Join(CSVColumns, ","))
	}
	return nil
}

// run parses the input into batches of at most n rows until it ends or ctx
// does.
func (s *source) run(ctx context.Context, n int, out chan<- batch) error {
	events := make([]event.Event, n)
	rows := make([]store.Row, 0, n)
	send := func() bool {
		b := batch{rows: rows, bytes: s.cr.n.Load() - int64(s.br.Buffered()), read: s.read}
		select {
		case out <- b:
		case <-ctx.Done():
			return false
		}
		events, rows = make([]event.Event, n), make([]store.Row, 0, n)
		return true
	}
	for {
		e := &events[len(rows)]
		*e = event.Event{}
		ok, err := s.next(e)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if e.ID == "" { // rejected or blank
			continue
		}
		r, verr := s.im.price(e)
		if verr != nil {
			s.reject(verr)
			continue
		}
		rows = append(rows, r)
		if len(rows) == n && !send() {
			return ctx.Err()
		}
	}
	if len(rows) > 0 && !send() {
		return ctx.Err()
	}
	return ctx.Err()
}

// next reads one line into e. It returns false at the end of the input;
// e.ID stays empty when the line was blank or rejected.
func (s *source) next(e *event.Event) (bool, error) {
	if s.csv != nil {
		return s.nextCSV(e)
	}
	line, err := s.br.ReadSlice('\n')
	if len(line) == 0 && err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, fmt.Errorf("read input: %w", err)
	}
	s.line++
	if errors.Is(err, bufio.ErrBufferFull) {
		// Far past the size limit: skip to the end of the line.
		size := len(line)
		for errors.Is(err, bufio.ErrBufferFull) {
			line, err = s.br.ReadSlice('\n')
			size += len(line)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return false, fmt.Errorf("read input: %w", err)
		}
		s.read++
		s.reject(&event.ValidationError{Reason: event.ReasonTooLarge, Detail: fmt.Sprintf("event is over %d bytes, limit %d", size, event.MaxSize)})
		return true, nil
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read input: %w", err)
	}
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return true, nil
	}
	s.read++
	if verr := s.im.validator.Parse(line, "", e); verr != nil {
		e.ID = ""
		s.reject(verr)
	}
	return true, nil
}

func (s *source) nextCSV(e *event.Event) (bool, error) {
	rec, err := s.csv.Read()
	if errors.Is(err, io.EOF) {
		return false, nil
	}
	var perr *csv.ParseError
	if err != nil && !errors.As(err, &perr) {
		return false, fmt.Errorf("read input: %w", err)
	}
	if perr != nil {
		s.line = int64(perr.StartLine)
		s.read++
		s.reject(&event.ValidationError{Reason: ReasonInvalidCSV, Detail: perr.Err.Error()})
		return true, nil
	}
	line, _ := s.csv.FieldPos(0)
	s.line = int64(line)
	if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
		return true, nil // a blank line
	}
	s.read++
	if verr := s.fromCSV(rec, e); verr != nil {
		e.ID = ""
		s.reject(verr)
	}
	return true, nil
}

// fromCSV fills e from a record and validates it as the collector would
// validate its JSON.
func (s *source) fromCSV(rec []string, e *event.Event) *event.ValidationError {
	if len(rec) != s.width {
		return &event.ValidationError{Reason: ReasonInvalidCSV, Detail: fmt.Sprintf("%d fields, the header has %d", len(rec), s.width)}
	}
	get := func(i int) string {
		if s.cols[i] < 0 {
			return ""
		}
		return rec[s.cols[i]]
	}
	e.ID, e.TenantID, e.Kind = get(0), get(1), get(2)
	if t := get(3); t != "" {
		at, err := time.Parse(time.RFC3339Nano, t)
		if err != nil {
			return &event.ValidationError{Reason: event.ReasonBadTime, Field: "time", Detail: fmt.Sprintf("%q is not RFC 3339", clip(t))}
		}
		e.Time = at
	}
	var verr *event.ValidationError
	e.Quantity, verr = number(get(4), "quantity", 1, event.ReasonBadQuantity)
	if verr != nil {
		return verr
	}
	e.Service, e.Route, e.UserID = get(5), get(6), get(7)
	if e.LatencyMs, verr = number(get(8), "latency_ms", 0, event.ReasonBadField); verr != nil {
		return verr
	}
	if v := get(9); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return &event.ValidationError{Reason: event.ReasonBadField, Field: "status_code", Detail: fmt.Sprintf("%q is not an integer", clip(v))}
		}
		e.StatusCode = n
	}
	if v := get(10); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return &event.ValidationError{Reason: event.ReasonWrongType, Field: "error", Detail: fmt.Sprintf("%q is not true or false", clip(v))}
		}
		e.Error = b
	}
	if v := get(11); v != "" {
		if err := json.Unmarshal([]byte(v), &e.Attrs); err != nil {
			return &event.ValidationError{Reason: event.ReasonBadAttrs, Field: "attrs", Detail: "must be a JSON object of string values"}
		}
	}
	if verr := s.im.validator.Validate(e, ""); verr != nil {
		return verr
	}
	s.buf = event.AppendJSON(s.buf[:0], e)
	if len(s.buf) > event.MaxSize {
		return &event.ValidationError{Reason: event.ReasonTooLarge, Detail: fmt.Sprintf("event is %d bytes, limit %d", len(s.buf), event.MaxSize)}
	}
	return nil
}

// number parses a CSV number cell written as JSON writes numbers; empty is
// def.
func number(v, field string, def float64, r event.Reason) (float64, *event.ValidationError) {
	if v == "" {
		return def, nil
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !(c >= '0' && c <= '9') && c != '.' && c != 'e' && c != 'E' && c != '+' && c != '-' {
			return 0, &event.ValidationError{Reason: event.ReasonWrongType, Field: field, Detail: fmt.Sprintf("%q is not a number", clip(v))}
		}
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, &event.ValidationError{Reason: event.ReasonWrongType, Field: field, Detail: fmt.Sprintf("%q is not a number", clip(v))}
	}
	if err != nil {
		return 0, &event.ValidationError{Reason: r, Field: field, Detail: fmt.Sprintf("%q is out of range", clip(v))}
	}
	return f, nil
}

func (s *source) reject(verr *event.ValidationError) {
	s.bad.Add(1)
	s.reasons[string(verr.Reason)]++
	if len(s.errs) < s.im.cfg.MaxErrors {
		s.errs = append(s.errs, LineError{Line: s.line, Reason: verr.Reason, Err: verr.Error()})
	}
}

func (s *source) rejected() int64 { return s.bad.Load() }

// summarize copies the parser's counters once it is done.
func (s *source) summarize(sum *Summary) {
	sum.Read, sum.Rejected, sum.Bytes = s.read, s.bad.Load(), s.cr.n.Load()
	for k, v := range s.reasons {
		sum.Reasons[k] = v
	}
	sum.Errors = s.errs
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
