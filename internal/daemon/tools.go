package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/collector"
	"github.com/tenantguard/tenantguard/collector/backfill"
	"github.com/tenantguard/tenantguard/collector/emit"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/loadgen"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/collector/store"
)

// NewImporter returns the importer `tenantguard import` runs on st: the
// collector's validation (with cfg's custom kinds), cfg's price book and
// lateness; allowOlder accepts events older than the lateness, and
// batchRows > 0 overrides the rows per dedup lookup and insert.
func NewImporter(cfg Config, st backfill.Store, allowOlder bool, batchRows int) (*backfill.Importer, error) {
	validator, err := event.NewValidator(event.Rules{CustomKinds: cfg.Collector.CustomKinds})
	if err != nil {
		return nil, err
	}
	book, err := pricing.New(cfg.Pricing, validator.KnownKind)
	if err != nil {
		return nil, err
	}
	icfg := backfill.DefaultConfig()
	icfg.Lateness, icfg.AllowOlder, icfg.CustomKinds = cfg.Collector.Lateness, allowOlder, cfg.Collector.CustomKinds
	if batchRows > 0 {
		icfg.BatchRows = batchRows
	}
	return backfill.New(icfg, st, book)
}

// ReplayClickHouse runs the detector (cfg, planOf: see AnomalyConfig) on
// the usage_1m history of [from, to) in the store sc names, and keeps
// evaluating flush past the end so ended spikes resolve. Rows with
// unusable numbers are skipped and counted on warn.
func ReplayClickHouse(ctx context.Context, sc store.Config, cfg anomaly.Config, planOf anomaly.Option, from, to time.Time, flush time.Duration, warn io.Writer) ([]anomaly.Episode, anomaly.Span, error) {
	st, err := store.Open(ctx, sc)
	if err != nil {
		return nil, anomaly.Span{}, err
	}
	defer st.Close()
	r, err := anomaly.NewReplayer(cfg, planOf)
	if err != nil {
		return nil, anomaly.Span{}, err
	}
	skipped, firstBad, err := anomaly.QueryRollups(ctx, st, from, to, func(ro *anomaly.Rollup) error {
		r.Rollup(ro)
		return nil
	})
	if err != nil {
		return nil, anomaly.Span{}, err
	}
	if skipped > 0 {
		fmt.Fprintf(warn, "replay: skipped %d usage_1m rows with unusable numbers; first: %v\n", skipped, firstBad)
	}
	span := r.Span()
	return r.Finish(flush), span, nil
}

// Traffic connects to NATS as service, checks that the usage stream exists
// (so the first events are not refused with "no responders"; only `run`
// and `migrate` create it: a missing one is a provision.MissingError), and
// returns a generator of lc's traffic and an emitter with the overflow
// policy. The caller closes the emitter, then the connection.
func Traffic(ctx context.Context, cfg Config, log *slog.Logger, lc loadgen.Config, service, overflow string) (*loadgen.Generator, *nats.Conn, *emit.Emitter, error) {
	gen, err := loadgen.NewGenerator(lc)
	if err != nil {
		return nil, nil, nil, err
	}
	nc, err := ConnectNATS(cfg.NATS, log, service)
	if err != nil {
		return nil, nil, nil, err
	}
	fail := func(err error) (*loadgen.Generator, *nats.Conn, *emit.Emitter, error) {
		nc.Close()
		return nil, nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fail(err)
	}
	if _, err := collector.OpenUsageStream(ctx, js); err != nil {
		return fail(err)
	}
	ecfg := emit.DefaultConfig()
	ecfg.Overflow, ecfg.Service = overflow, service
	em, err := emit.New(nc, ecfg)
	if err != nil {
		return fail(err)
	}
	return gen, nc, em, nil
}
