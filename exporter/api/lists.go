package api

import (
	"net/http"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

type anomaly struct {
	Fingerprint string     `json:"fingerprint"`
	TenantID    string     `json:"tenant_id"`
	Metric      string     `json:"metric"`
	Kind        string     `json:"kind"`
	Status      string     `json:"status"`
	Severity    string     `json:"severity"`
	Observed    *float64   `json:"observed"`
	Baseline    *float64   `json:"baseline"`
	Ratio       *float64   `json:"ratio"`
	StartsAt    time.Time  `json:"starts_at"`
	EndsAt      *time.Time `json:"ends_at"` // null while firing
	Summary     string     `json:"summary"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

// anomalies: GET /api/v1/anomalies?from&to[&tenant][&status] (admin) and
// GET /api/v1/tenants/{tenant_id}/anomalies?from&to[&status]. An anomaly is
// listed when it overlaps [from, to); the latest version of each (FINAL).
func (s *Server) anomalies(w http.ResponseWriter, r *http.Request, _ principal, tenant string) {
	p := parseParams(r.URL.RawQuery)
	from, to := p.timeRange(s.cfg.MaxRange)
	if tenant == "" {
		tenant = p.tenant("tenant")
	}
	status := p.enum("status", "", "firing", "resolved")
	limit, offset := p.page(s.cfg.DefaultPageSize, s.cfg.MaxPageSize)
	if err := p.done(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	q := `SELECT fingerprint, tenant_id, metric, kind, status, severity, observed, baseline, ratio,
    starts_at, ends_at, summary, updated_at
FROM ` + s.table("anomalies") + ` FINAL
WHERE starts_at < toDateTime(?) AND (toUInt32(ends_at) = 0 OR ends_at > toDateTime(?))`
	args := []any{ceilSecond(to), from.Unix()}
	q, args = andEq(q, args, "tenant_id", tenant)
	q, args = andEq(q, args, "status", status)
	q += " ORDER BY starts_at DESC, tenant_id, fingerprint"
	resp := listResponse{TenantID: tenant, From: from, To: to}
	serveList(s, w, r, "anomalies", q, args, limit, offset, resp, func(rows driver.Rows) (anomaly, error) {
		var a anomaly
		var obs, base, ratio float64
		var ends time.Time
		err := rows.Scan(&a.Fingerprint, &a.TenantID, &a.Metric, &a.Kind, &a.Status, &a.Severity, &obs, &base, &ratio,
			&a.StartsAt, &ends, &a.Summary, &a.UpdatedAt)
		a.Observed, a.Baseline, a.Ratio = finite(obs), finite(base), finite(ratio)
		a.StartsAt, a.UpdatedAt = a.StartsAt.UTC(), a.UpdatedAt.UTC()
		if ends.Unix() > 0 {
			e := ends.UTC()
			a.EndsAt = &e
		}
		return a, err
	})
}

type decision struct {
	TenantID   string    `json:"tenant_id"`
	Scope      string    `json:"scope"`
	Action     string    `json:"action"`
	RatePerSec *float64  `json:"rate_per_sec"`
	Burst      uint32    `json:"burst"`
	IssuedAt   time.Time `json:"issued_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	Reason     string    `json:"reason"`
	Source     string    `json:"source"`
	AnomalyID  string    `json:"anomaly_id"`
	RecordedAt time.Time `json:"recorded_at"`
	// The KV revision the daemon recorded (kv_revision 0: a row from
	// before it recorded revisions), its operation (put, delete, purge),
	// and whether the put was signed by a trusted key, else why not.
	KVKey        string `json:"kv_key"`
	KVRevision   uint64 `json:"kv_revision"`
	KVOp         string `json:"kv_op"`
	Verified     bool   `json:"verified"`
	RejectReason string `json:"reject_reason"`
}

// decisions: GET /api/v1/decisions?from&to[&tenant][&action] (admin) and
// GET /api/v1/tenants/{tenant_id}/decisions?from&to[&action]: decisions
// issued in [from, to), newest first.
func (s *Server) decisions(w http.ResponseWriter, r *http.Request, _ principal, tenant string) {
	p := parseParams(r.URL.RawQuery)
	from, to := p.timeRange(s.cfg.MaxRange)
	if tenant == "" {
		tenant = p.tenant("tenant")
	}
	action := p.enum("action", "", "throttle", "shed", "open_circuit", "clear")
	limit, offset := p.page(s.cfg.DefaultPageSize, s.cfg.MaxPageSize)
	if err := p.done(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	q := `SELECT tenant_id, scope, action, rate_per_sec, burst, issued_at, expires_at, reason, source, anomaly_id, recorded_at,
    kv_key, kv_revision, kv_op, verified, reject_reason
FROM ` + s.table("decisions") + `
WHERE issued_at >= toDateTime(?) AND issued_at < toDateTime(?)`
	args := []any{ceilSecond(from), ceilSecond(to)}
	q, args = andEq(q, args, "tenant_id", tenant)
	q, args = andEq(q, args, "action", action)
	q += " ORDER BY issued_at DESC, tenant_id, recorded_at DESC, scope"
	resp := listResponse{TenantID: tenant, From: from, To: to}
	serveList(s, w, r, "decisions", q, args, limit, offset, resp, func(rows driver.Rows) (decision, error) {
		var d decision
		var rate float64
		var verified uint8
		err := rows.Scan(&d.TenantID, &d.Scope, &d.Action, &rate, &d.Burst, &d.IssuedAt, &d.ExpiresAt, &d.Reason,
			&d.Source, &d.AnomalyID, &d.RecordedAt, &d.KVKey, &d.KVRevision, &d.KVOp, &verified, &d.RejectReason)
		d.Verified = verified == 1
		d.RatePerSec = finite(rate)
		d.IssuedAt, d.ExpiresAt, d.RecordedAt = d.IssuedAt.UTC(), d.ExpiresAt.UTC(), d.RecordedAt.UTC()
		return d, err
	})
}

type pgFinding struct {
	Database        string    `json:"database"`
	QueryID         int64     `json:"queryid,string"` // a string: it exceeds JSON's safe integers
	UserID          uint32    `json:"userid"`
	Role            string    `json:"role"`
	Query           string    `json:"query"`
	Tables          []string  `json:"tables"`
	Class           string    `json:"class"`
	Calls           uint64    `json:"calls"`
	TotalExecTimeMs *float64  `json:"total_exec_time_ms"`
	FirstSeen       time.Time `json:"first_seen"`
	LastSeen        time.Time `json:"last_seen"`
	ObservedAt      time.Time `json:"observed_at"`
}

// pgFindings: GET /api/v1/pg/findings?from&to[&class][&database] (admin):
// findings seen during [from, to), costliest first.
func (s *Server) pgFindings(w http.ResponseWriter, r *http.Request, _ principal, _ string) {
	p := parseParams(r.URL.RawQuery)
	from, to := p.timeRange(s.cfg.MaxRange)
	class := p.enum("class", "", "unscoped", "multi_tenant", "unknown")
	database := p.dbName("database")
	limit, offset := p.page(s.cfg.DefaultPageSize, s.cfg.MaxPageSize)
	if err := p.done(); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	q := `SELECT database, queryid, userid, role, query, tables, class, calls, total_exec_time_ms,
    first_seen, last_seen, observed_at
FROM ` + s.table("pg_findings") + ` FINAL
WHERE last_seen >= toDateTime(?) AND first_seen < toDateTime(?)`
	args := []any{ceilSecond(from), ceilSecond(to)}
	q, args = andEq(q, args, "class", class)
	q, args = andEq(q, args, "database", database)
	q += " ORDER BY total_exec_time_ms DESC, database, queryid, userid"
	resp := listResponse{From: from, To: to}
	serveList(s, w, r, "pg findings", q, args, limit, offset, resp, func(rows driver.Rows) (pgFinding, error) {
		var f pgFinding
		var total float64
		err := rows.Scan(&f.Database, &f.QueryID, &f.UserID, &f.Role, &f.Query, &f.Tables, &f.Class, &f.Calls, &total,
			&f.FirstSeen, &f.LastSeen, &f.ObservedAt)
		f.TotalExecTimeMs = finite(total)
		f.FirstSeen, f.LastSeen, f.ObservedAt = f.FirstSeen.UTC(), f.LastSeen.UTC(), f.ObservedAt.UTC()
		if f.Tables == nil {
			f.Tables = []string{}
		}
		return f, err
	})
}
