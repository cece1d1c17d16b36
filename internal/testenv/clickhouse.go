package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/tenantguard/tenantguard/internal/chserver"
)

// ClickHouseServer is a clickhouse-server child process (see chserver)
// with test helpers.
type ClickHouseServer struct {
	*chserver.Server
}

// ClickHouseBinary returns the clickhouse-server path, or "" when missing.
func ClickHouseBinary() string { return chserver.Binary() }

// NewClickHouseServer starts a dedicated server that stops at the end of t.
// Use it for tests that stop and start the server; others use ClickHouse.
func NewClickHouseServer(t testing.TB) *ClickHouseServer {
	t.Helper()
	if ClickHouseBinary() == "" {
		missing(t, "clickhouse-server")
	}
	s, err := chserver.Start(t.TempDir(), FreePort(t), FreePort(t))
	if err != nil {
		t.Fatalf("clickhouse: %v", err)
	}
	t.Cleanup(s.Stop)
	return &ClickHouseServer{s}
}

// Start starts the server again with its existing data.
func (s *ClickHouseServer) Start() error { return s.Restart() }

func (s *ClickHouseServer) open(database string) (driver.Conn, error) {
	return clickhouse.Open(&clickhouse.Options{
		Addr:        []string{s.Addr},
		Auth:        clickhouse.Auth{Database: database, Username: "default"},
		DialTimeout: 2 * time.Second,
		ReadTimeout: time.Minute,
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
	if ClickHouseBinary() == "" {
		missing(t, "clickhouse-server")
	}
	sharedCHOnce.Do(func() {
		dir, err := os.MkdirTemp("", "tenantguard-ch-")
		if err != nil {
			sharedCHErr = err
			return
		}
		var s *chserver.Server
		s, sharedCHErr = chserver.Start(dir, FreePort(t), FreePort(t))
		if s != nil {
			sharedCH = &ClickHouseServer{s}
		}
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
