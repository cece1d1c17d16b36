package decide

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/tenantguard/tenantguard/limiter"
)

// Listed is one decision of the bucket as `tenantguard decisions` lists
// it: the decision's fields, its KV key, and "ok" or why it does not
// verify (one of limiter.RejectReasons).
type Listed struct {
	limiter.Decision
	// Mode is the decision's mode, "enforce" when the field is absent.
	Mode      limiter.Mode `json:"mode"`
	Key       string       `json:"key"`
	Signature string       `json:"signature"`
}

// List returns the entries to show: every one with all, else every one
// but clears. A missing mode reads "enforce".
func List(entries []limiter.Entry, all bool) []Listed {
	ds := []Listed{}
	for _, e := range entries {
		if e.Decision.Action == limiter.ActionClear && !all {
			continue
		}
		sig := "ok"
		if e.Reject != "" {
			sig = e.Reject
		}
		mode := e.Decision.Mode
		if mode == "" {
			mode = limiter.ModeEnforce
		}
		ds = append(ds, Listed{Decision: e.Decision, Mode: mode, Key: e.Key, Signature: sig})
	}
	return ds
}

// WriteJSON writes ds as an indented JSON array, with every rune that
// could drive a terminal escaped.
func WriteJSON(w io.Writer, ds []Listed) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(ds); err != nil {
		return err
	}
	_, err := w.Write(escapeJSON(buf.Bytes()))
	return err
}

// WriteText writes ds as a table, one decision a line, with control and
// format characters of any field escaped; "no live decisions" when empty.
func WriteText(w io.Writer, ds []Listed, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tSCOPE\tACTION\tMODE\tRATE/S\tBURST\tSOURCE\tEXPIRES IN\tSIGNATURE\tREASON")
	for _, d := range ds {
		left := d.ExpiresAt.Sub(now).Round(time.Second).String()
		if !d.Live(now) {
			left = "expired"
		}
		tenant := d.TenantID
		if t, _, err := limiter.ParseKey(d.Key); err == nil {
			tenant = t
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%g\t%d\t%s\t%s\t%s\t%s\n", escapeText(tenant), escapeText(d.Scope),
			escapeText(string(d.Action)), escapeText(string(d.Mode)), d.RatePerSec, d.EffectiveBurst(), escapeText(string(d.Source)),
			left, d.Signature, escapeText(d.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(ds) == 0 {
		_, err := fmt.Fprintln(w, "no live decisions")
		return err
	}
	return nil
}

// unsafeRune reports whether r must not reach a terminal as it is: a
// control character (C0, DEL, C1: ANSI escapes start with ESC or CSI), a
// format character (bidirectional overrides, zero-width), or invalid UTF-8.
func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == utf8.RuneError
}

// escapeText returns s with every unsafe rune written as a Go escape
// (\x1b, \n, \u009b, \u202e), and tabs too, which would break the table.
func escapeText(s string) string {
	if !strings.ContainsFunc(s, unsafeRune) {
		return s
	}
	var b strings.Builder
	for i, w := 0, 0; i < len(s); i += w {
		r, n := utf8.DecodeRuneInString(s[i:])
		w = n
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\r':
			b.WriteString(`\r`)
		case unsafeRune(r) && r < 0x80:
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// escapeJSON rewrites the unsafe runes that encoding/json leaves as they
// are (DEL, C1 controls, format characters; it escapes C0 itself and
// replaces invalid UTF-8) as \u escapes. They can only
// appear inside strings, so the document stays valid and equal.
func escapeJSON(b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == 0x7f || (r >= 0x80 && r <= 0x9f) || unicode.Is(unicode.Cf, r) {
			if out == nil {
				out = append(make([]byte, 0, len(b)+16), b[:i]...)
			}
			if r1, r2 := utf16.EncodeRune(r); r1 != unicode.ReplacementChar {
				out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
			} else {
				out = fmt.Appendf(out, `\u%04x`, r)
			}
		} else if out != nil {
			out = append(out, b[i:i+n]...)
		}
		i += n
	}
	if out == nil {
		return b
	}
	return out
}
