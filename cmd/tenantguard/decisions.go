package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/internal/daemon"
	"github.com/tenantguard/tenantguard/limiter"
)

// listedDecision is one line of `tenantguard decisions --format json`: the
// decision's fields, its KV key, and "ok" or why it does not verify.
type listedDecision struct {
	limiter.Decision
	// Mode is the decision's mode, "enforce" when the field is absent.
	Mode      limiter.Mode `json:"mode"`
	Key       string       `json:"key"`
	Signature string       `json:"signature"`
}

func newDecisionsCmd(a *app) *cobra.Command {
	var (
		format string
		all    bool
	)
	cmd := &cobra.Command{
		Use:   "decisions [--format text|json]",
		Short: "List the live decisions in the tenantguard_decisions bucket, with whether each verifies",
		Long: "decisions lists the live decisions in the tenantguard_decisions bucket. SIGNATURE is ok for a\n" +
			"decision signed by decisions.signing_key_file's key or one of decisions.trusted_keys, else why\n" +
			"limiters ignore it (unsigned, bad_signature, unknown_key, invalid, malformed, expiry_too_far).\n" +
			"Control characters in any field are printed escaped.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "text" && format != "json" {
				return usageErr(fmt.Errorf("--format %q must be text or json", format))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
			defer cancel()
			pub, closeNC, err := daemon.OpenPublisher(ctx, a.cfg, a.log, false)
			if err != nil {
				return err
			}
			defer closeNC()
			entries, err := pub.Entries(ctx, all)
			if err != nil {
				return err
			}
			ds := []listedDecision{}
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
				ds = append(ds, listedDecision{Decision: e.Decision, Mode: mode, Key: e.Key, Signature: sig})
			}
			if format == "json" {
				var buf bytes.Buffer
				enc := json.NewEncoder(&buf)
				enc.SetIndent("", "  ")
				if err := enc.Encode(ds); err != nil {
					return err
				}
				_, err := a.stdout.Write(escapeJSON(buf.Bytes()))
				return err
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TENANT\tSCOPE\tACTION\tMODE\tRATE/S\tBURST\tSOURCE\tEXPIRES IN\tSIGNATURE\tREASON")
			now := time.Now()
			for _, d := range ds {
				left := time.Until(d.ExpiresAt).Round(time.Second).String()
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
				fmt.Fprintln(a.stdout, "no live decisions")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	cmd.Flags().BoolVar(&all, "all", false, "include expired decisions and clears still in the bucket")
	return cmd
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
