package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// ClickHouseServer is a clickhouse-server child process with a minimal
// config, on a free port, with its data in a temporary directory.
type ClickHouseServer struct {
	Addr string // host:port of the native protocol
	HTTP string // host:port of the HTTP interface
	dir  string
	proc *process
	mu   sync.Mutex
}

// ClickHouseBinary returns the clickhouse-server path, or "" when missing.
func ClickHouseBinary() string {
	return lookBinary("clickhouse-server", "/usr/bin/clickhouse-server", "clickhouse")
}

// NewClickHouseServer starts a dedicated server that stops at the end of t.
// Use it for tests that stop and start the server; others use ClickHouse.
func NewClickHouseServer(t testing.TB) *ClickHouseServer {
	t.Helper()
	bin := ClickHouseBinary()
	if bin == "" {
		missing(t, "clickhouse-server")
	}
	s, err := StartClickHouse(bin, t.TempDir(), FreePort(t), FreePort(t))
	if err != nil {
		t.Fatalf("clickhouse: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// StartClickHouse writes a minimal config under dir and starts the server.
// The dev command uses it too.
func StartClickHouse(bin, dir string, tcpPort, httpPort int) (*ClickHouseServer, error) {
	s := &ClickHouseServer{
		Addr: fmt.Sprintf("127.0.0.1:%d", tcpPort),
		HTTP: fmt.Sprintf("127.0.0.1:%d", httpPort),
		dir:  dir,
	}
	if err := writeClickHouseConfig(dir, tcpPort, httpPort); err != nil {
		return nil, err
	}
	return s, s.Start()
}

// Start starts the server with its existing data, if it is not running.
func (s *ClickHouseServer) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil && !s.proc.exited() {
		return nil
	}
	bin := ClickHouseBinary()
	args := []string{"--config-file=" + filepath.Join(s.dir, "config.xml")}
	if filepath.Base(bin) == "clickhouse" {
		args = append([]string{"server"}, args...)
	}
	p, err := startProcess("clickhouse-server", filepath.Join(s.dir, "server.log"), exec.Command(bin, args...))
	if err != nil {
		return err
	}
	s.proc = p
	if err := waitTCP(s.Addr, 30*time.Second); err != nil {
		p.stop(time.Second)
		return fmt.Errorf("%w\n%s", err, tail(filepath.Join(s.dir, "server.log")))
	}
	return s.ping()
}

func (s *ClickHouseServer) ping() error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := s.open("default")
		if err == nil {
			err = conn.Ping(context.Background())
			conn.Close()
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("clickhouse ping: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops the server; Start brings it back with the same data.
func (s *ClickHouseServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.proc.stop(10 * time.Second)
}

// Kill stops the server with SIGKILL, as a crash would.
func (s *ClickHouseServer) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil && !s.proc.exited() {
		_ = s.proc.cmd.Process.Kill()
		<-s.proc.done
	}
}

func (s *ClickHouseServer) open(database string) (driver.Conn, error) {
	return clickhouse.Open(&clickhouse.Options{
		Addr:        []string{s.Addr},
		Auth:        clickhouse.Auth{Database: database, Username: "default"},
		DialTimeout: 2 * time.Second,
	})
}

// Conn opens a native connection to database, closed at the end of t.
func (s *ClickHouseServer) Conn(t testing.TB, database string) driver.Conn {
	t.Helper()
	conn, err := s.open(database)
	if err != nil {
		t.Fatalf("clickhouse open: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// NewDatabase creates a fresh database with a unique name and drops it at
// the end of t, so tests can share a server and run in parallel.
func (s *ClickHouseServer) NewDatabase(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	conn := s.Conn(t, "default")
	ctx, cancel := ctxTimeout(30 * time.Second)
	defer cancel()
	if err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := ctxTimeout(30 * time.Second)
		defer cancel()
		if c, err := s.open("default"); err == nil {
			_ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name)
			c.Close()
		}
	})
	return name
}

var (
	sharedCH     *ClickHouseServer
	sharedCHErr  error
	sharedCHOnce sync.Once
)

// ClickHouse returns the test binary's shared server and a fresh database
// on it. The server is started on first use and stopped by Main.
func ClickHouse(t testing.TB) (*ClickHouseServer, string) {
	t.Helper()
	bin := ClickHouseBinary()
	if bin == "" {
		missing(t, "clickhouse-server")
	}
	sharedCHOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tenantguard-ch-")
		if err != nil {
			sharedCHErr = err
			return
		}
		sharedCH, sharedCHErr = StartClickHouse(bin, dir, FreePort(t), FreePort(t))
		atExit(func() {
			if sharedCH != nil {
				sharedCH.Stop()
			}
			os.RemoveAll(dir)
		})
	})
	if sharedCHErr != nil {
		t.Fatalf("clickhouse: %v", sharedCHErr)
	}
	return sharedCH, sharedCH.NewDatabase(t)
}

func writeClickHouseConfig(dir string, tcpPort, httpPort int) error {
	for _, sub := range []string{"data", "tmp", "user_files", "format_schemas"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	config := strings.NewReplacer(
		"{dir}", dir, "{tcp}", itoa(tcpPort), "{http}", itoa(httpPort),
	).Replace(`<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <tcp_port>{tcp}</tcp_port>
  <http_port>{http}</http_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{dir}/data/</path>
  <tmp_path>{dir}/tmp/</tmp_path>
  <user_files_path>{dir}/user_files/</user_files_path>
  <format_schema_path>{dir}/format_schemas/</format_schema_path>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>200</max_concurrent_queries>
  <users_config>{dir}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
</yandex>
`)
	users := `<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`
	if err := os.WriteFile(filepath.Join(dir, "config.xml"), []byte(config), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "users.xml"), []byte(users), 0o644)
}
