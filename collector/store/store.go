package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Config says how to reach ClickHouse.
type Config struct {
	// Addr lists native-protocol addresses. Default ["127.0.0.1:9000"].
	Addr []string `mapstructure:"addr"`
	// Database holds the tables. Default "tenantguard".
	Database string `mapstructure:"database"`
	// Username defaults to "default"; Password to empty.
	Username string `mapstructure:"username"`
	Password string `mapstructure:"password"`
	// DialTimeout bounds connecting. Default 5s.
	DialTimeout time.Duration `mapstructure:"dial_timeout"`
	// ReadTimeout bounds one query's reads. Default 5m.
	ReadTimeout time.Duration `mapstructure:"read_timeout"`
	// MaxOpenConns caps the pool. Default 10.
	MaxOpenConns int `mapstructure:"max_open_conns"`
	// Migrate applies the schema at start. Default true.
	Migrate bool `mapstructure:"migrate"`
	// RetentionDays drops event partitions older than this; 0 keeps all.
	// At most 3650 (10 years). Default 0.
	RetentionDays int `mapstructure:"retention_days"`
	// Cluster names a cluster of the servers' remote_servers section. Set,
	// each table is a Distributed table over <table>_local on every shard,
	// sharded by tenant, and inserts wait for every shard
	// (insert_distributed_sync). "" is a single node. Default "".
	Cluster string `mapstructure:"cluster"`
	// Shards lists the native address of each shard of Cluster, one per
	// shard: migrations, retention and tenant deletion reach every shard's
	// local tables there. Required with Cluster, empty without. Default
	// empty.
	Shards []string `mapstructure:"shards"`
}

// MaxRetentionDays bounds retention_days; 0 keeps everything for longer.
const MaxRetentionDays = 3650

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Addr:         []string{"127.0.0.1:9000"},
		Database:     "tenantguard",
		Username:     "default",
		DialTimeout:  5 * time.Second,
		ReadTimeout:  5 * time.Minute,
		MaxOpenConns: 10,
		Migrate:      true,
	}
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// ValidIdent reports whether s is safe to splice into SQL as an identifier.
func ValidIdent(s string) bool { return identRE.MatchString(s) }

// Validate names every bad field.
func (c Config) Validate() error {
	var errs []error
	if len(c.Addr) == 0 {
		errs = append(errs, errors.New("clickhouse.addr: must not be empty"))
	}
	for _, a := range c.Addr {
		if !validAddr(a) {
			errs = append(errs, fmt.Errorf("clickhouse.addr: %q must be host:port with a port from 1 to 65535", a))
		}
	}
	errs = append(errs, c.validateCluster()...)
	if !ValidIdent(c.Database) {
		errs = append(errs, fmt.Errorf("clickhouse.database: %q must match %s", c.Database, identRE))
	}
	if c.DialTimeout < 100*time.Millisecond || c.DialTimeout > 5*time.Minute {
		errs = append(errs, errors.New("clickhouse.dial_timeout: must be 100ms to 5m"))
	}
	if c.ReadTimeout < time.Second || c.ReadTimeout > 24*time.Hour {
		errs = append(errs, errors.New("clickhouse.read_timeout: must be 1s to 24h"))
	}
	if c.MaxOpenConns <= 0 || c.MaxOpenConns > 1000 {
		errs = append(errs, errors.New("clickhouse.max_open_conns: must be 1 to 1000"))
	}
	if c.RetentionDays < 0 || c.RetentionDays > MaxRetentionDays {
		errs = append(errs, fmt.Errorf("clickhouse.retention_days: must be 0 (keep all) to %d", MaxRetentionDays))
	}
	return errors.Join(errs...)
}

func validAddr(a string) bool {
	host, port, err := net.SplitHostPort(a)
	n, perr := strconv.ParseUint(port, 10, 16)
	return err == nil && host != "" && perr == nil && n > 0
}

// Store is a ClickHouse connection pool bound to one database.
type Store struct {
	cfg  Config
	conn driver.Conn
	// shards holds a small pool per shard when cfg.Cluster is set.
	shards    []shard
	closeOnce sync.Once
}

// Open connects to ClickHouse. It does not create anything; call Migrate.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	opts := cfg.options(cfg.Addr, cfg.MaxOpenConns)
	if cfg.Cluster != "" {
		// An insert into a Distributed table returns once every shard has
		// its rows, or fails: never queued on disk for later.
		opts.Settings = clickhouse.Settings{"insert_distributed_sync": 1}
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse %v: %w", cfg.Addr, err)
	}
	s := &Store{cfg: cfg, conn: conn}
	if err := s.openShards(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (c Config) options(addr []string, conns int) *clickhouse.Options {
	return &clickhouse.Options{
		Addr:         addr,
		Protocol:     clickhouse.Native,
		Auth:         clickhouse.Auth{Database: "default", Username: c.Username, Password: c.Password},
		DialTimeout:  c.DialTimeout,
		ReadTimeout:  c.ReadTimeout,
		MaxOpenConns: conns,
		MaxIdleConns: conns,
	}
}

// Conn returns the pooled connection. Table names must be qualified with
// Database(), since the connection's default database is "default".
func (s *Store) Conn() driver.Conn { return s.conn }

// Database returns the validated database name.
func (s *Store) Database() string { return s.cfg.Database }

// Table returns db.name for a table of this store.
func (s *Store) Table(name string) string { return s.cfg.Database + "." + name }

// Ping checks that ClickHouse answers.
func (s *Store) Ping(ctx context.Context) error { return s.conn.Ping(ctx) }

// Close closes the pool; it is safe to call twice.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		errs := []error{s.conn.Close()}
		for _, sh := range s.shards {
			errs = append(errs, sh.conn.Close())
		}
		err = errors.Join(errs...)
	})
	return err
}

// insertRows writes rows into table with one native batch that names
// columns (18.16 needs the list), values giving each row's values in that
// order. The batch is always sent or aborted, so a failure never holds a
// pooled connection.
func insertRows[R any](ctx context.Context, s *Store, table, columns string, rows []R, values func(*R) []any) error {
	return insertInto(ctx, s.conn, s.Table(table), table, columns, rows, values)
}

// insertInto is insertRows on conn, into qualified (named table in errors).
func insertInto[R any](ctx context.Context, conn driver.Conn, qualified, table, columns string, rows []R, values func(*R) []any) error {
	if len(rows) == 0 {
		return nil
	}
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+qualified+" ("+columns+")")
	if err != nil {
		return fmt.Errorf("prepare %s batch: %w", table, err)
	}
	for i := range rows {
		if err := batch.Append(values(&rows[i])...); err != nil {
			_ = batch.Abort()
			return fmt.Errorf("append %s row: %w", table, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d rows into %s: %w", len(rows), table, err)
	}
	return nil
}

// ServerVersion returns the server's version as major, minor.
func (s *Store) ServerVersion(ctx context.Context) (major, minor int, err error) {
	return serverVersion(ctx, s.conn)
}

func serverVersion(ctx context.Context, conn driver.Conn) (major, minor int, err error) {
	v, err := versionString(ctx, conn)
	if err != nil {
		return 0, 0, err
	}
	if _, err := fmt.Sscanf(v, "%d.%d", &major, &minor); err != nil {
		return 0, 0, fmt.Errorf("parse server version %q: %w", v, err)
	}
	return major, minor, nil
}

func versionString(ctx context.Context, conn driver.Conn) (string, error) {
	var v string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return "", fmt.Errorf("server version: %w", err)
	}
	return v, nil
}

// AskVersion connects to the server cfg names and returns its version(),
// all within timeout, for a caller that only reports it.
func AskVersion(ctx context.Context, cfg Config, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cfg.DialTimeout = timeout
	st, err := Open(ctx, cfg)
	if err != nil {
		return "", err
	}
	defer st.Close()
	return versionString(ctx, st.conn)
}
