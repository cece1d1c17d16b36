package pgmeter

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/meter"
)

// Config configures a Tracer.
type Config struct {
	// Kind of the query events. Default db_query.
	Kind string
	// MaxStatements bounds the SQL texts whose operation and fingerprint
	// are cached; further texts are worked out per query. Default 10000.
	MaxStatements int
	// Database, when set, is put in every event's attrs.db, to tell the
	// service's databases apart. Default empty: no attrs.db.
	Database string
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config { return Config{Kind: event.KindDBQuery, MaxStatements: 10000} }

// Validate names every bad field by its Go path (pgmeter.Config.Kind).
func (c Config) Validate() error {
	var errs []error
	if !event.ValidKindName(c.Kind) {
		errs = append(errs, fmt.Errorf("pgmeter.Config.Kind: %q must match %s", c.Kind, event.KindPattern))
	}
	if len(c.Database) > 63 {
		errs = append(errs, errors.New("pgmeter.Config.Database: longer than 63 bytes"))
	}
	if c.MaxStatements < 0 {
		errs = append(errs, errors.New("pgmeter.Config.MaxStatements: must be >= 0"))
	}
	return errors.Join(errs...)
}

// Tracer is a pgx.QueryTracer and pgx.BatchTracer that meters each query
// as an event for the tenant in its context. Set it as the Tracer of a
// pgx.ConnConfig (pgxpool.Config.ConnConfig.Tracer for a pool). A query
// whose context carries no tenant is not metered; it is counted in
// tenantguard_meter_untenanted_total{kind}.
type Tracer struct {
	rec   *meter.Meter // concrete: a Record passed through an interface escapes to the heap
	kind  string
	db    string
	stmts statements
}

var (
	_ pgx.QueryTracer = (*Tracer)(nil)
	_ pgx.BatchTracer = (*Tracer)(nil)
)

// New returns a Tracer that queues its events on the service's Meter.
func New(rec *meter.Meter, cfg Config) (*Tracer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, errors.New("pgmeter: the service's *meter.Meter is required")
	}
	t := &Tracer{rec: rec, kind: cfg.Kind, db: cfg.Database}
	t.stmts.max = int64(cfg.MaxStatements)
	return t, nil
}

// queryCtx carries a traced query from start to end: one allocation.
type queryCtx struct {
	context.Context
	id    event.Identity
	start time.Time
	st    *statement
}

type queryKey struct{}

// skipKey marks the statements InTenant runs on its own behalf.
type skipKey struct{}

func (q *queryCtx) Value(key any) any {
	switch key.(type) {
	case queryKey:
		return q
	case event.IdentityKey:
		return &q.id
	}
	return q.Context.Value(key)
}

// TraceQueryStart implements pgx.QueryTracer.
func (t *Tracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if !t.rec.Metering() || ctx.Value(skipKey{}) != nil {
		return ctx
	}
	id, ok := event.IdentityFrom(ctx)
	if !ok {
		t.rec.Record(&meter.Record{Kind: t.kind}) // counted as untenanted
		return ctx
	}
	return &queryCtx{Context: ctx, id: id, start: time.Now(), st: t.stmts.get(data.SQL)}
}

// TraceQueryEnd implements pgx.QueryTracer.
func (t *Tracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	q, ok := ctx.(*queryCtx)
	if !ok {
		if q, ok = ctx.Value(queryKey{}).(*queryCtx); !ok {
			return
		}
	}
	t.record(q.id, q.st, q.start, time.Since(q.start), data.CommandTag, data.Err)
}

// batchCtx carries a traced batch.
type batchCtx struct {
	context.Context
	id event.Identity
}

func (b *batchCtx) Value(key any) any {
	if _, ok := key.(event.IdentityKey); ok {
		return &b.id
	}
	return b.Context.Value(key)
}

// TraceBatchStart implements pgx.BatchTracer.
func (t *Tracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	if !t.rec.Metering() || ctx.Value(skipKey{}) != nil {
		return ctx
	}
	id, ok := event.IdentityFrom(ctx)
	if !ok {
		t.rec.Record(&meter.Record{Kind: t.kind})
		return ctx
	}
	return &batchCtx{Context: ctx, id: id}
}

// TraceBatchQuery implements pgx.BatchTracer: each query of a batch is an
// event, timed from when pgx began reading its result.
func (t *Tracer) TraceBatchQuery(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchQueryData) {
	b, ok := ctx.(*batchCtx)
	if !ok {
		return
	}
	start := data.ReadStartTime
	if start.IsZero() {
		start = time.Now()
	}
	t.record(b.id, t.stmts.get(data.SQL), start, time.Since(start), data.CommandTag, data.Err)
}

// TraceBatchEnd implements pgx.BatchTracer.
func (t *Tracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

func (t *Tracer) record(id event.Identity, st *statement, start time.Time, d time.Duration, tag pgconn.CommandTag, err error) {
	rec := meter.Record{Kind: t.kind, Identity: id, Route: st.op, Time: start, Latency: d, Error: err != nil}
	rec.Add(meter.Hex("fingerprint", st.fp))
	rec.Add(meter.Int("rows", tag.RowsAffected()))
	if t.db != "" {
		rec.Add(meter.String("db", t.db))
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			rec.Add(meter.String("sqlstate", pgErr.Code))
		}
	}
	t.rec.Record(&rec)
}
