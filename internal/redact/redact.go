// Package redact removes credentials (URL passwords and tokens, DSN
// passwords) from text, and from log records through Handler. Every CLI
// message and log line that may carry an address goes through it.
package redact

import (
	"context"
	"log/slog"
	"regexp"
	"strings"
)

// redacted stands in for a secret, as url.URL.Redacted writes it.
const redacted = "xxxxx"

var (
	// schemeUserinfoRE matches the credentials of a URL with a scheme:
	// nats://user:password@host, postgres://user:password@host, or
	// nats://token@host. The userinfo runs to the last '@' before the host.
	schemeUserinfoRE = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://)([^/\s"'<>,]*)@`)
	// bareUserinfoRE matches user:password@ of a URL without a scheme,
	// which NATS accepts (user:password@host:4222).
	bareUserinfoRE = regexp.MustCompile(`(^|[\s,;=("'])([^\s/@,;:="'()]+):([^\s/,"']*)@`)
	// secretParamRE matches key=value secrets of DSNs and query strings:
	// password=..., sslpassword=..., token=...
	secretParamRE = regexp.MustCompile(`(?i)\b((?:ssl)?password|passwd|pwd|secret|token)=('[^']*'|"[^"]*"|[^\s&;,"']*)`)
)

// tokenSchemes are the URL schemes whose user-only userinfo is a secret
// token (nats://token@host) rather than a user name.
var tokenSchemes = map[string]bool{"nats://": true, "tls://": true, "ws://": true, "wss://": true}

// String removes credentials from s, which may be a URL, a comma-separated
// list of URLs, a DSN, or a message that quotes any of them: passwords and
// tokens become "xxxxx", user names stay. Every CLI message and log line
// that may carry an address goes through it.
func String(s string) string {
	if !strings.ContainsAny(s, "@=") {
		return s
	}
	s = schemeUserinfoRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := schemeUserinfoRE.FindStringSubmatch(m)
		scheme, info := sub[1], sub[2]
		if user, _, ok := strings.Cut(info, ":"); ok {
			return scheme + user + ":" + redacted + "@"
		}
		if tokenSchemes[strings.ToLower(scheme)] && info != "" {
			return scheme + redacted + "@"
		}
		return m
	})
	s = bareUserinfoRE.ReplaceAllString(s, "${1}${2}:"+redacted+"@")
	return secretParamRE.ReplaceAllString(s, "${1}="+redacted)
}

// Handler passes log records on with String applied to the message
// and to every string, error and Stringer value, so no stage can log a
// credential it was handed in an address.
type Handler struct{ Next slog.Handler }

var _ slog.Handler = Handler{}

func (h Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.Next.Enabled(ctx, l) }

func (h Handler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, String(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return h.Next.Handle(ctx, out)
}

func (h Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = redactAttr(a)
	}
	return Handler{h.Next.WithAttrs(clean)}
}

func (h Handler) WithGroup(name string) slog.Handler {
	return Handler{h.Next.WithGroup(name)}
}

func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, String(v.String()))
	case slog.KindGroup:
		group := v.Group()
		clean := make([]any, len(group))
		for i, g := range group {
			clean[i] = redactAttr(g)
		}
		return slog.Group(a.Key, clean...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, String(x.Error()))
		case interface{ String() string }:
			return slog.String(a.Key, String(x.String()))
		case []string:
			clean := make([]string, len(x))
			for i, s := range x {
				clean[i] = String(s)
			}
			return slog.Any(a.Key, clean)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
