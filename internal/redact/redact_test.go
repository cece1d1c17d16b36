package redact

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nats://user:secret@127.0.0.1:4222", "nats://user:xxxxx@127.0.0.1:4222"},
		{"nats://a:secret@h1:4222,nats://h2:4222, tls://b:secret@h3", "nats://a:xxxxx@h1:4222,nats://h2:4222, tls://b:xxxxx@h3"},
		{"nats://secret@h:4222", "nats://xxxxx@h:4222"},
		{"user:secret@h:4222,h2", "user:xxxxx@h:4222,h2"},
		{"nats://user:p@ss:secret@h", "nats://user:xxxxx@h"},
		{`connect nats nats://user:secret@h:1: refused`, `connect nats nats://user:xxxxx@h:1: refused`},
		{"postgres://app:secret@db:5432/app?sslmode=disable", "postgres://app:xxxxx@db:5432/app?sslmode=disable"},
		{"postgres://app@db/app", "postgres://app@db/app"},
		{"host=db user=app password=secret dbname=app", "host=db user=app password=xxxxx dbname=app"},
		{"host=db password='se cret' dbname=app", "host=db password=xxxxx dbname=app"},
		{"http://h/hook?token=secret&x=1", "http://h/hook?token=xxxxx&x=1"},
		{"no secrets here: 127.0.0.1:9000, a@b", "no secrets here: 127.0.0.1:9000, a@b"},
	} {
		if got := String(tc.in); got != tc.want {
			t.Errorf("String(%q) got %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestLogsAreRedacted(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(Handler{Next: slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})}).With("url", "nats://u:secret1@h:4222")
	log.Warn("connect to postgres://app:secret2@db/app failed", "err", errors.New("dial nats://u:secret3@h: refused"),
		slog.Group("g", "dsn", "password=secret4"), "addrs", []string{"nats://tok_secret5@h"})
	if strings.Contains(buf.String(), "secret") {
		t.Fatalf("a log line carries a credential:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), "nats://u:xxxxx@h:4222") {
		t.Fatalf("the redacted address is missing:\n%s", buf.String())
	}
}
