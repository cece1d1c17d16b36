package api

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/teststore"
)

// seedBig stores n events of tenant with a 400-byte route: about 250 bytes
// per event exported, far more than the kernel buffers between server and a
// client that does not read.
func seedBig(t *testing.T, st *store.Store, tenant string, n int) {
	t.Helper()
	route := strings.Repeat("r", 400)
	rows := make([]store.Row, 0, n)
	for i := range n {
		r := oneRow(tenant, i)
		r.Event.Time = t0.Add(time.Duration(i) * time.Second % (24 * time.Hour))
		r.Event.Route = route
		rows = append(rows, r)
	}
	if err := st.InsertEvents(context.Background(), rows, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// stalledExport sends GET path with token on a connection with a 4 KiB
// receive buffer, reads the response head and then stops reading.
type stalledExport struct {
	conn net.Conn
	resp *http.Response
}

func stall(t *testing.T, addr, path, token string) *stalledExport {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	req := "GET " + path + " HTTP/1.1\r\nHost: tenantguard\r\nAuthorization: Bearer " + token + "\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 4096), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stalled export %s: got %d, want 200", path, resp.StatusCode)
	}
	return &stalledExport{conn: conn, resp: resp}
}

func wantTooMany(t *testing.T, r resp, what, msgPart string) {
	t.Helper()
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("%s: got %d, want 429", what, r.status)
	}
	if r.header.Get("Retry-After") != "5" {
		t.Errorf("%s: Retry-After %q, want 5", what, r.header.Get("Retry-After"))
	}
	if msg := errorMessage(t, r); !strings.Contains(msg, msgPart) {
		t.Errorf("%s: error %q, want it to mention %q", what, msg, msgPart)
	}
}

// TestSlowExportReadersAreCappedAndCut: exports that stop being read hold a
// slot only until the write deadline, every slot beyond the caps gets 429,
// and a cut export gives its ClickHouse connection back.
func TestSlowExportReadersAreCappedAndCut(t *testing.T) {
	st := teststore.New(t)
	seedBig(t, st, "acme", 60000) // ~25 MB of NDJSON
	cfg := testConfig()
	cfg.MaxConcurrentExports, cfg.MaxConcurrentExportsPerToken = 2, 1
	// Long enough for the checks below to run while both stalled exports
	// still hold their slots.
	cfg.ExportWriteTimeout = 3 * time.Second
	f := start(t, st, cfg)
	events := "/api/v1/tenants/acme/events?" + rng

	a := stall(t, f.srv.Addr(), events, tokens["acme"])
	wantTooMany(t, get(t, f.url+events, bearer("acme")), "a second export of the same token", "this token")
	b := stall(t, f.srv.Addr(), events, tokens["admin"])
	wantTooMany(t, get(t, f.url+"/api/v1/billing/export?"+rng, bearer("billing")), "a third export", "too many exports")

	// Both stalled clients are cut once a write waits ExportWriteTimeout:
	// their connections end before the whole body.
	time.Sleep(2 * cfg.ExportWriteTimeout)
	for name, s := range map[string]*stalledExport{"tenant": a, "admin": b} {
		_ = s.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		n, err := io.Copy(io.Discard, s.resp.Body)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s's stalled export was not cut within 20 s (%d bytes)", name, n)
		}
		if err == nil {
			t.Fatalf("%s's stalled export ended cleanly after %d bytes; want a cut connection", name, n)
		}
	}
	// The slots are free again, and so are the ClickHouse connections.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := get(t, f.url+"/api/v1/billing/export?"+rng, bearer("billing"))
		if r.status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("export after the cuts: got %d %s, want 200", r.status, r.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for {
		// clickhouse-go counts in Open the connections in use.
		if inUse := st.Conn().Stats().Open; inUse == 0 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("ClickHouse pool: %d connections in use, want 0: a cut export still holds one", inUse)
		}
		time.Sleep(100 * time.Millisecond)
	}
	total, _ := f.srv.exports.inUse("")
	if total != 0 {
		t.Fatalf("%d export slots still taken, want 0", total)
	}
}

// TestSlowButReadingExportIsNotCut: the deadline is per write, so an export
// that takes longer than ExportWriteTimeout in total is fine while the
// client keeps reading.
func TestSlowButReadingExportIsNotCut(t *testing.T) {
	st := teststore.New(t)
	seedBig(t, st, "acme", 20000)
	cfg := testConfig()
	cfg.ExportWriteTimeout = 500 * time.Millisecond
	f := start(t, st, cfg)
	s := stall(t, f.srv.Addr(), "/api/v1/tenants/acme/events?"+rng, tokens["acme"])
	begin := time.Now()
	buf := make([]byte, 64<<10)
	lines, sincePause := 0, 0
	for {
		n, err := s.resp.Body.Read(buf)
		lines += strings.Count(string(buf[:n]), "\n")
		if sincePause += n; sincePause >= 1<<20 {
			time.Sleep(250 * time.Millisecond) // under the write timeout
			sincePause = 0
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("after %d lines: %v", lines, err)
		}
	}
	if took := time.Since(begin); lines != 20000 || took < 2*cfg.ExportWriteTimeout {
		t.Fatalf("got %d lines in %v, want 20000 in more than %v", lines, took, 2*cfg.ExportWriteTimeout)
	}
}

func TestExportLimitConfig(t *testing.T) {
	cfg := testConfig()
	cfg.MaxConcurrentExports, cfg.MaxConcurrentExportsPerToken, cfg.ExportWriteTimeout = 0, 3, 0
	err := cfg.Validate()
	for _, want := range []string{"api.max_concurrent_exports: must be >= 1",
		"api.max_concurrent_exports_per_token: must be 1 to api.max_concurrent_exports", "api.export_write_timeout: must be 100ms to 1h"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want it to name %s", err, want)
		}
	}
	d := DefaultConfig()
	if d.MaxConcurrentExports != 4 || d.MaxConcurrentExportsPerToken != 2 || d.ExportWriteTimeout != 30*time.Second {
		t.Errorf("defaults: got %d, %d, %v, want 4, 2, 30s", d.MaxConcurrentExports, d.MaxConcurrentExportsPerToken, d.ExportWriteTimeout)
	}
}
