package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// A sharded deployment (Config.Cluster set) keeps two layers on every
// shard: the local tables, named <table>_local, with the engines and
// materialized views of a single node, and under the contract names
// Distributed tables over them. Reads and inserts use the contract names,
// so they span every shard; migrations, retention and tenant deletion
// connect to each shard (Config.Shards) and work on its local tables, as
// there is no ZooKeeper for ON CLUSTER.

// ShardingKeys returns the sharding key of each table's Distributed layer,
// by table.
// A tenant's rows share a shard: its events and corrections feed the
// usage_1m and usage_1h rows beside them through the views, and a ReplacingMergeTree
// key (anomalies, pg_findings) never spans shards, so FINAL on the
// Distributed table is exact. billing_exports shards by export, so one
// export is one insert into one shard and is recorded whole.
func ShardingKeys() map[string]string {
	return map[string]string{
		"events":          "cityHash64(tenant_id)",
		"usage_1m":        "cityHash64(tenant_id)",
		"usage_1h":        "cityHash64(tenant_id)",
		"anomalies":       "cityHash64(tenant_id)",
		"decisions":       "cityHash64(tenant_id)",
		"corrections":     "cityHash64(tenant_id)",
		"pg_findings":     "cityHash64(database, queryid, userid)",
		"billing_exports": "cityHash64(export_id)",
	}
}

// LocalSuffix names a sharded table's local layer: events_local.
const LocalSuffix = "_local"

// shard is one shard's own pool, for the statements that must run on its
// local tables.
type shard struct {
	addr string
	conn driver.Conn
}

// shardConns is how many connections each shard's own pool keeps: its
// work is migrations, retention and mutations, one statement at a time.
const shardConns = 2

func (c Config) validateCluster() []error {
	var errs []error
	if c.Cluster == "" {
		if len(c.Shards) > 0 {
			errs = append(errs, errors.New("clickhouse.shards: set only with clickhouse.cluster"))
		}
		return errs
	}
	if !ValidIdent(c.Cluster) {
		errs = append(errs, fmt.Errorf("clickhouse.cluster: %q must match %s", c.Cluster, identRE))
	}
	if len(c.Shards) == 0 {
		errs = append(errs, errors.New("clickhouse.shards: must list each shard's native address when clickhouse.cluster is set"))
	}
	if len(c.Shards) > maxShards {
		errs = append(errs, fmt.Errorf("clickhouse.shards: at most %d", maxShards))
	}
	seen := map[string]bool{}
	for _, a := range c.Shards {
		switch {
		case !validAddr(a):
			errs = append(errs, fmt.Errorf("clickhouse.shards: %q must be host:port with a port from 1 to 65535", a))
		case seen[a]:
			errs = append(errs, fmt.Errorf("clickhouse.shards: %q is listed twice", a))
		}
		seen[a] = true
	}
	return errs
}

// maxShards bounds clickhouse.shards.
const maxShards = 256

func (s *Store) openShards() error {
	if s.cfg.Cluster == "" {
		return nil
	}
	for _, a := range s.cfg.Shards {
		conn, err := clickhouse.Open(s.cfg.options([]string{a}, shardConns))
		if err != nil {
			return fmt.Errorf("open clickhouse shard %s: %w", a, err)
		}
		s.shards = append(s.shards, shard{addr: a, conn: conn})
	}
	return nil
}

// Cluster returns the configured cluster, "" for a single node.
func (s *Store) Cluster() string { return s.cfg.Cluster }

// local returns db.name of the table that holds name's rows on one
// server: name on a single node, name_local on a shard.
func (s *Store) local(name string) string {
	if s.cfg.Cluster != "" {
		return s.Table(name + LocalSuffix)
	}
	return s.Table(name)
}

// nodes returns each server whose local tables hold rows: the store's
// pool on a single node, every shard's in a cluster.
func (s *Store) nodes() []shard {
	if s.cfg.Cluster == "" {
		return []shard{{addr: strings.Join(s.cfg.Addr, ","), conn: s.conn}}
	}
	return s.shards
}

// step is one statement of a migration on one server. When column is set,
// it adds that column to table and is skipped if the table has it.
type step struct {
	sql, table, column string
}

var (
	createTableRE = regexp.MustCompile(`^\s*CREATE TABLE IF NOT EXISTS \{db\}\.([a-z_0-9]+) `)
	tableRefRE    = regexp.MustCompile(`\{db\}\.([a-z_0-9]+)`)
)

// steps returns the statements that apply m to one server, {db} replaced.
// On a shard, each statement works on the local tables, and each table m
// creates or alters gets its Distributed layer created or altered too.
func (s *Store) steps(m Migration) ([]step, error) {
	db, keys := s.cfg.Database, ShardingKeys()
	fill := func(stmt string) string { return strings.ReplaceAll(stmt, "{db}", db) }
	var out []step
	for _, stmt := range m.Statements {
		add := addColumnRE.FindStringSubmatch(stmt)
		if s.cfg.Cluster == "" {
			st := step{sql: fill(stmt)}
			if add != nil {
				st.table, st.column = add[1], add[2]
			}
			out = append(out, st)
			continue
		}
		localSQL := fill(tableRefRE.ReplaceAllStringFunc(stmt, func(ref string) string {
			if _, sharded := keys[strings.TrimPrefix(ref, "{db}.")]; sharded {
				return ref + LocalSuffix
			}
			return ref
		}))
		switch {
		case add != nil:
			table := add[1]
			if _, ok := keys[table]; !ok {
				return nil, fmt.Errorf("table %s has no sharding key", table)
			}
			out = append(out, step{sql: localSQL, table: table + LocalSuffix, column: add[2]},
				step{sql: fill(stmt), table: table, column: add[2]})
		case createTableRE.MatchString(stmt):
			table := createTableRE.FindStringSubmatch(stmt)[1]
			key, ok := keys[table]
			if !ok {
				return nil, fmt.Errorf("table %s has no sharding key", table)
			}
			out = append(out, step{sql: localSQL}, step{sql: fmt.Sprintf(
				"CREATE TABLE IF NOT EXISTS %[1]s.%[2]s AS %[1]s.%[2]s%[3]s ENGINE = Distributed(%[4]s, '%[1]s', '%[2]s%[3]s', %[5]s)",
				db, table, LocalSuffix, s.cfg.Cluster, key)})
		default:
			out = append(out, step{sql: localSQL})
		}
	}
	return out, nil
}

// checkCluster checks, on every shard, that the cluster exists with as
// many shards as clickhouse.shards lists, and that no two listed addresses
// are the same shard.
func (s *Store) checkCluster(ctx context.Context) error {
	local := map[uint32]string{}
	for _, sh := range s.shards {
		var shards uint64
		err := sh.conn.QueryRow(ctx, "SELECT uniqExact(shard_num) FROM system.clusters WHERE cluster = ?", s.cfg.Cluster).Scan(&shards)
		if err != nil {
			return fmt.Errorf("shard %s: read system.clusters: %w", sh.addr, err)
		}
		if int(shards) != len(s.shards) {
			return fmt.Errorf("shard %s: cluster %s has %d shards in remote_servers, clickhouse.shards lists %d",
				sh.addr, s.cfg.Cluster, shards, len(s.shards))
		}
		rows, err := sh.conn.Query(ctx, "SELECT DISTINCT shard_num FROM system.clusters WHERE cluster = ? AND is_local", s.cfg.Cluster)
		if err != nil {
			return fmt.Errorf("shard %s: read system.clusters: %w", sh.addr, err)
		}
		for rows.Next() {
			var n uint32
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return fmt.Errorf("shard %s: read system.clusters: %w", sh.addr, err)
			}
			if other, dup := local[n]; dup {
				rows.Close()
				return fmt.Errorf("clickhouse.shards: %s and %s are both shard %d of cluster %s", other, sh.addr, n, s.cfg.Cluster)
			}
			local[n] = sh.addr
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("shard %s: read system.clusters: %w", sh.addr, err)
		}
	}
	return nil
}

// checkLayers checks that every sharded table on sh is a Distributed table
// over a local one: a database migrated for a single node has the same
// ledger but MergeTree tables under the contract names.
func (s *Store) checkLayers(ctx context.Context, sh shard) error {
	rows, err := sh.conn.Query(ctx, "SELECT name, engine FROM system.tables WHERE database = ?", s.cfg.Database)
	if err != nil {
		return fmt.Errorf("read system.tables: %w", err)
	}
	defer rows.Close()
	engines := map[string]string{}
	for rows.Next() {
		var name, engine string
		if err := rows.Scan(&name, &engine); err != nil {
			return fmt.Errorf("read system.tables: %w", err)
		}
		engines[name] = engine
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read system.tables: %w", err)
	}
	var bad []string
	for table := range ShardingKeys() {
		if e, ok := engines[table]; ok && e != "Distributed" {
			bad = append(bad, fmt.Sprintf("%s is %s, not Distributed", table, e))
		} else if _, ok := engines[table+LocalSuffix]; ok != (engines[table] == "Distributed") {
			bad = append(bad, fmt.Sprintf("%s and %s%s are not both there", table, table, LocalSuffix))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("database %s is not laid out for cluster %s (was it created for a single node?): %s",
			s.cfg.Database, s.cfg.Cluster, strings.Join(bad, "; "))
	}
	return nil
}
