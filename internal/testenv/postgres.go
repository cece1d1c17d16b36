package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresServer is a Postgres cluster made by initdb, with
// pg_stat_statements preloaded, run as the postgres system user when the
// test runs as root (Postgres refuses to run as root).
type PostgresServer struct {
	Port int
	dir  string
	bin  string
	proc *process
}

// PostgresBinDir returns the newest /usr/lib/postgresql/*/bin, or "".
func PostgresBinDir() string {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	return ""
}

// DSN returns a superuser connection string for database.
func (p *PostgresServer) DSN(database string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port, database)
}

// StartPostgres creates a cluster in a new directory under os.TempDir.
func StartPostgres(port int) (*PostgresServer, error) {
	bin := PostgresBinDir()
	if bin == "" {
		return nil, fmt.Errorf("initdb not found under /usr/lib/postgresql/*/bin")
	}
	dir, err := os.MkdirTemp("", "tenantguard-pg-")
	if err != nil {
		return nil, err
	}
	p := &PostgresServer{Port: port, dir: dir, bin: bin}
	cred, err := postgresCredential(dir)
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	conf := fmt.Sprintf(`
port = %d
listen_addresses = '127.0.0.1'
unix_socket_directories = '%s'
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
pg_stat_statements.max = 10000
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
`, port, dir)
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	_, err = f.WriteString(conf)
	f.Close()
	if err != nil {
		return nil, err
	}
	return p, p.Start()
}

// postgresCredential makes dir usable by the postgres user when running as
// root and returns the credential to run as; nil means the current user.
func postgresCredential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs the postgres system user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// Start runs postgres on the existing cluster and waits until it answers.
func (p *PostgresServer) Start() error {
	cred, err := postgresCredential(p.dir)
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(p.bin, "postgres"), "-D", filepath.Join(p.dir, "data"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	logPath := filepath.Join(os.TempDir(), filepath.Base(p.dir)+".log")
	proc, err := startProcess("postgres", logPath, cmd)
	if err != nil {
		return err
	}
	p.proc = proc
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := ctxTimeout(2 * time.Second)
		conn, err := pgx.Connect(ctx, p.DSN("postgres"))
		if err == nil {
			conn.Close(ctx)
			cancel()
			return nil
		}
		cancel()
		if proc.exited() || time.Now().After(deadline) {
			return fmt.Errorf("postgres did not start: %v\n%s", err, tail(logPath))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops the server and removes its data and its log.
func (p *PostgresServer) Stop() {
	p.proc.stop(10 * time.Second)
	os.RemoveAll(p.dir)
	if p.proc != nil {
		os.Remove(p.proc.log.Name())
	}
}

// NewDatabase creates a database with pg_stat_statements installed and
// returns its superuser DSN. It is dropped at the end of t.
func (p *PostgresServer) NewDatabase(t testing.TB) (name, dsn string) {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name = "t_" + hex.EncodeToString(b[:]) // unique for parallel tests too
	ctx, cancel := ctxTimeout(30 * time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, p.DSN("postgres"))
	if err != nil {
		t.Fatalf("postgres connect: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	dsn = p.DSN(name)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("postgres connect %s: %v", name, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"); err != nil {
		t.Fatalf("create extension: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := ctxTimeout(30 * time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, p.DSN("postgres")); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(ctx)
		}
	})
	return name, dsn
}

var (
	sharedPG     *PostgresServer
	sharedPGErr  error
	sharedPGOnce sync.Once
)

// Postgres returns the test binary's shared cluster and a fresh database on
// it (with pg_stat_statements). The cluster is stopped by Main.
func Postgres(t testing.TB) (*PostgresServer, string) {
	t.Helper()
	if PostgresBinDir() == "" {
		missing(t, "postgres (initdb)")
	}
	sharedPGOnce.Do(func() {
		sharedPG, sharedPGErr = StartPostgres(FreePort(t))
		atExit(func() {
			if sharedPG != nil {
				sharedPG.Stop()
			}
		})
	})
	if sharedPGErr != nil {
		t.Fatalf("postgres: %v", sharedPGErr)
	}
	_, dsn := sharedPG.NewDatabase(t)
	return sharedPG, dsn
}
