package billing

import (
	"fmt"
	"time"
)

// validRange checks a [from, to) range.
func validRange(from, to time.Time) error {
	switch {
	case from.IsZero():
		return fmt.Errorf("%w: from: required (RFC 3339)", ErrInvalid)
	case to.IsZero():
		return fmt.Errorf("%w: to: required (RFC 3339)", ErrInvalid)
	case !to.After(from):
		return fmt.Errorf("%w: to: must be after from", ErrInvalid)
	case from.Year() < 1970 || to.Year() > 2105:
		// DateTime is a UInt32 of seconds: 1970 to 2106.
		return fmt.Errorf("%w: from/to: must lie between 1970 and 2105", ErrInvalid)
	}
	return nil
}

// ceilMilli rounds t up to the millisecond: events are stored with
// millisecond precision, so e >= t exactly when e >= ceilMilli(t).
func ceilMilli(t time.Time) time.Time {
	tr := t.Truncate(time.Millisecond)
	if tr.Before(t) {
		tr = tr.Add(time.Millisecond)
	}
	return tr.UTC()
}

// timeCond returns the WHERE clause selecting events in [from, to) from the
// events table's (time DateTime, time_ms UInt16) pair, and its bound
// arguments. The leading time bounds keep ClickHouse's index and partition
// pruning; the millisecond tests only matter for sub-second bounds.
func timeCond(from, to time.Time) (string, []any) {
	from, to = ceilMilli(from), ceilMilli(to)
	fs, ts := from.Unix(), to.Unix()
	fms, tms := uint16(from.Nanosecond()/1e6), uint16(to.Nanosecond()/1e6)
	if fms == 0 && tms == 0 {
		return "time >= toDateTime(?) AND time < toDateTime(?)", []any{fs, ts}
	}
	return "time >= toDateTime(?) AND time <= toDateTime(?)" +
			" AND (time > toDateTime(?) OR time_ms >= ?) AND (time < toDateTime(?) OR time_ms < ?)",
		[]any{fs, ts, fs, fms, ts, tms}
}

// formatPeriod writes a range bound for the period columns.
func formatPeriod(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
