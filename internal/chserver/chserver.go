// Package chserver runs clickhouse-server as a child process from a minimal
// generated config: the root element <yandex>, loopback only, its data in
// one directory, a passwordless default user limited to 127.0.0.1, merged-away
// parts deleted after 30 s and no system log tables, so its directory stays small.
// `tenantguard dev` and the tests' testenv both use it. The child gets
// SIGKILL if this process dies, so it never outlives its parent.
//
// StartInCluster adds a remote_servers section naming a cluster of
// shards (one replica each, no ZooKeeper), so several servers started
// with the same Cluster serve Distributed tables over each other.
package chserver

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// InstallHint is printed when the binary is missing.
const InstallHint = "sudo apt-get install -y clickhouse-server clickhouse-client   (or: sudo scripts/install-deps.sh)"

// Binary returns the clickhouse-server path, or "" when it is not installed.
func Binary() string {
	for _, n := range []string{"clickhouse-server", "/usr/bin/clickhouse-server", "clickhouse"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return ""
}

// Server is one clickhouse-server child process.
type Server struct {
	Addr string // host:port of the native protocol
	HTTP string // host:port of the HTTP interface
	Dir  string // config, data and server.log

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// Cluster is a cluster in the servers' remote_servers section: one shard
// per native address, each shard one replica.
type Cluster struct {
	Name   string   // a ClickHouse identifier
	Shards []string // host:port of each shard's native protocol
}

// remoteServers renders c as a remote_servers section, or "" when c is
// the zero Cluster.
func (c Cluster) remoteServers() (string, error) {
	if c.Name == "" {
		return "", nil
	}
	if !clusterNameRE.MatchString(c.Name) || len(c.Shards) == 0 {
		return "", fmt.Errorf("cluster %q: want a name matching %s and at least one shard", c.Name, clusterNameRE)
	}
	var b strings.Builder
	b.WriteString("  <remote_servers><" + c.Name + ">\n")
	for _, a := range c.Shards {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return "", fmt.Errorf("cluster %s: shard %q: %w", c.Name, a, err)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil || !hostRE.MatchString(host) {
			return "", fmt.Errorf("cluster %s: shard %q: want host:port", c.Name, a)
		}
		b.WriteString("    <shard><replica><host>" + host + "</host><port>" + port + "</port></replica></shard>\n")
	}
	b.WriteString("  </" + c.Name + "></remote_servers>\n")
	return b.String(), nil
}

var (
	clusterNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)
	hostRE        = regexp.MustCompile(`^[A-Za-z0-9.-]{1,253}$`)
)

// Start writes a config under dir (keeping existing data) and starts the
// server on the given ports, waiting until it answers a ping.
func Start(dir string, tcpPort, httpPort int) (*Server, error) {
	return StartInCluster(dir, tcpPort, httpPort, Cluster{})
}

// StartInCluster is Start with cluster in the server's remote_servers;
// the zero Cluster adds none.
func StartInCluster(dir string, tcpPort, httpPort int, cluster Cluster) (*Server, error) {
	if Binary() == "" {
		return nil, fmt.Errorf("clickhouse-server not found; install it: %s", InstallHint)
	}
	s := &Server{
		Addr: "127.0.0.1:" + strconv.Itoa(tcpPort),
		HTTP: "127.0.0.1:" + strconv.Itoa(httpPort),
		Dir:  dir,
	}
	remote, err := cluster.remoteServers()
	if err != nil {
		return nil, err
	}
	if err := writeConfig(dir, tcpPort, httpPort, remote); err != nil {
		return nil, err
	}
	return s, s.Restart()
}

// Restart starts the server again with its existing data if it is stopped.
func (s *Server) Restart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running() {
		return nil
	}
	bin := Binary()
	args := []string{"--config-file=" + filepath.Join(s.Dir, "config.xml")}
	if filepath.Base(bin) == "clickhouse" {
		args = append([]string{"server"}, args...)
	}
	logf, err := os.OpenFile(filepath.Join(s.Dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start clickhouse-server: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	s.cmd, s.done = cmd, done
	if err := s.waitReady(30 * time.Second); err != nil {
		s.signal(syscall.SIGKILL)
		<-done
		return fmt.Errorf("%w\n%s", err, s.logTail())
	}
	return nil
}

// PID returns the server's process id, or 0 when it is not running.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running() {
		return 0
	}
	return s.cmd.Process.Pid
}

func (s *Server) running() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("clickhouse-server exited during start")
		default:
		}
		if c, err := net.DialTimeout("tcp", s.Addr, 200*time.Millisecond); err == nil {
			c.Close()
			conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{s.Addr}, DialTimeout: time.Second})
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				last = conn.Ping(ctx)
				cancel()
				conn.Close()
				if last == nil {
					return nil
				}
			}
		} else {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("clickhouse-server on %s not ready after %s: %v", s.Addr, timeout, last)
}

func (s *Server) signal(sig syscall.Signal) {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, sig)
	}
}

// Stop stops the server gracefully (SIGKILL after 10 s). Restart brings it back.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running() {
		return
	}
	s.signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.signal(syscall.SIGKILL)
		<-s.done
	}
}

// Kill stops the server with SIGKILL, as a crash would.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running() {
		s.signal(syscall.SIGKILL)
		<-s.done
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "server.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// writeConfig writes config.xml and users.xml. Beside what the server
// needs, it bounds the data directory: a part that a merge replaced is
// deleted after 30 s instead of the default 8 minutes (a collector that
// inserts twice a second otherwise keeps about a thousand such parts, each
// a few dozen small files), and it names no system log table (query_log,
// part_log, trace_log...), so the server keeps none. remoteServers is a
// rendered remote_servers section, or "".
func writeConfig(dir string, tcpPort, httpPort int, remoteServers string) error {
	for _, sub := range []string{"data", "tmp", "user_files", "format_schemas"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	config := strings.NewReplacer("{dir}", dir, "{tcp}", strconv.Itoa(tcpPort), "{http}", strconv.Itoa(httpPort), "{remote}\n", remoteServers).Replace(`<yandex>
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
  <merge_tree><old_parts_lifetime>30</old_parts_lifetime></merge_tree>
{remote}
</yandex>
`)
	const users = `<yandex>
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
