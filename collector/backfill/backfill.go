package backfill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"

	"github.com/shopspring/decimal"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/collector/store"
)

// Store is what an import needs from ClickHouse: the collector's dedup
// lookup and batch insert.
type Store interface {
	ExistingIDs(ctx context.Context, keys []store.EventKey) (map[string]struct{}, error)
	InsertEvents(ctx context.Context, rows []store.Row, ingestedAt time.Time) error
	// WaitMutations waits for pending deletions (delete-tenant), so the
	// dedup lookup does not see rows that are about to disappear.
	WaitMutations(ctx context.Context, interval time.Duration) error
}

var _ Store = (*store.Store)(nil)

// Pricer prices an event for a tenant, as the collector does.
type Pricer interface {
	Price(tenant, kind string) (plan string, unit decimal.Decimal)
	Version() string
}

var _ Pricer = (*pricing.Book)(nil)

// Format of an import file.
type Format string

// Formats: NDJSON lines in wire format v1, or CSV with a header row of
// wire field names.
const (
	FormatAuto   Format = ""
	FormatNDJSON Format = "ndjson"
	FormatCSV    Format = "csv"
)

// Config of an import.
type Config struct {
	// BatchRows is how many events one dedup lookup and insert take.
	// Default 50000.
	BatchRows int
	// Lateness refuses events older than this (too_late), as the collector
	// does; it is collector.lateness. Default 168h.
	Lateness time.Duration
	// AllowOlder accepts events of any age back to 1970. Default false.
	AllowOlder bool
	// CustomKinds are accepted besides the built-in kinds
	// (collector.custom_kinds). Default none.
	CustomKinds []string
	// MaxErrors is how many rejected lines the Summary lists with their
	// line numbers; every one is counted. Default 100.
	MaxErrors int
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{BatchRows: 50000, Lateness: event.DefaultLateness, MaxErrors: 100}
}

// Validate names every bad field.
func (c Config) Validate() error {
	var errs []error
	if c.BatchRows < 1 || c.BatchRows > 1_000_000 {
		errs = append(errs, errors.New("import batch_rows: must be 1 to 1000000"))
	}
	if c.Lateness <= 0 {
		errs = append(errs, errors.New("collector.lateness: must be > 0"))
	}
	if c.MaxErrors < 0 {
		errs = append(errs, errors.New("import max_errors: must be >= 0"))
	}
	return errors.Join(errs...)
}

// LineError is one rejected line.
type LineError struct {
	Line   int64        // 1-based line of the input
	Reason event.Reason // the collector's reason code
	Err    string       // the reason with its field and detail
}

func (e LineError) String() string { return "line " + strconv.FormatInt(e.Line, 10) + ": " + e.Err }

// Summary is what an import did.
type Summary struct {
	Read       int64            // events read (CSV header and blank lines excluded)
	Stored     int64            // events inserted
	Duplicates int64            // events already stored, or repeated in the input
	Rejected   int64            // lines refused; nothing of them was stored
	Reasons    map[string]int64 // rejected lines by reason code
	Errors     []LineError      // the first Config.MaxErrors rejections, in line order
	Bytes      int64            // input bytes read
	Elapsed    time.Duration
}

// ReasonCounts returns Reasons sorted by count, then name.
func (s Summary) ReasonCounts() []string {
	keys := make([]string, 0, len(s.Reasons))
	for k := range s.Reasons {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if s.Reasons[keys[i]] != s.Reasons[keys[j]] {
			return s.Reasons[keys[i]] > s.Reasons[keys[j]]
		}
		return keys[i] < keys[j]
	})
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k + " " + strconv.FormatInt(s.Reasons[k], 10)
	}
	return out
}

// Importer loads events into ClickHouse with their original times, through
// the collector's validation, pricing and dedup. It writes to ClickHouse
// directly, not through the live stream, so imported history raises no
// live alerts or throttles and moves no live counters.
type Importer struct {
	cfg       Config
	st        Store
	pricer    Pricer
	validator *event.Validator
	now       func() time.Time
}

// New checks cfg and returns an Importer.
func New(cfg Config, st Store, pricer Pricer) (*Importer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if st == nil || pricer == nil {
		return nil, errors.New("backfill: Store and Pricer are required")
	}
	lateness := cfg.Lateness
	if cfg.AllowOlder {
		// Back to 1970, the first second a DateTime column holds.
		lateness = time.Since(time.Unix(0, 0))
	}
	v, err := event.NewValidator(event.Rules{CustomKinds: cfg.CustomKinds, Lateness: lateness})
	if err != nil {
		return nil, fmt.Errorf("collector.custom_kinds: %w", err)
	}
	return &Importer{cfg: cfg, st: st, pricer: pricer, validator: v, now: time.Now}, nil
}

// Progress is reported after every stored batch.
type Progress struct {
	Bytes  int64 // input bytes read so far
	Read   int64
	Stored int64
	Dups   int64
	Bad    int64
}

// batch is a run of parsed events with the input position after them.
type batch struct {
	rows  []store.Row
	bytes int64
	read  int64
}

// Import reads r in format f, and stores every valid event not stored
// before. A rejected line is counted and listed, and the rest goes on; an
// error (ClickHouse failing, ctx ending, r failing) stops the import, and
// what was stored so far stays: running the same input again then adds
// only what is missing. progress, when set, is called after each batch.
func (im *Importer) Import(ctx context.Context, r io.Reader, f Format, progress func(Progress)) (Summary, error) {
	start := time.Now()
	sum := Summary{Reasons: map[string]int64{}}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	err := im.st.WaitMutations(wctx, 200*time.Millisecond)
	cancel()
	if err != nil {
		return sum, fmt.Errorf("wait for pending deletions: %w", err)
	}
	src, err := newSource(r, f, im)
	if err != nil {
		return sum, err
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	batches := make(chan batch, 2)
	parseErr := make(chan error, 1)
	go func() {
		defer close(batches)
		parseErr <- src.run(ctx, im.cfg.BatchRows, batches)
	}()
	var p Progress
	var werr error
	for b := range batches {
		if werr == nil {
			werr = im.store(ctx, b.rows, &p)
		}
		if werr != nil {
			stop() // the parser stops at its next batch
			continue
		}
		p.Bytes, p.Read = b.bytes, b.read
		p.Bad = src.rejected()
		if progress != nil {
			progress(p)
		}
	}
	perr := <-parseErr
	src.summarize(&sum)
	sum.Stored, sum.Duplicates = p.Stored, p.Dups
	sum.Elapsed = time.Since(start)
	if werr != nil {
		return sum, werr
	}
	if perr != nil {
		return sum, perr
	}
	return sum, nil
}

// store drops the rows ClickHouse already holds (or that repeat in the
// batch) and inserts the rest.
func (im *Importer) store(ctx context.Context, rows []store.Row, p *Progress) error {
	if len(rows) == 0 {
		return nil
	}
	keys := make([]store.EventKey, len(rows))
	for i := range rows {
		e := rows[i].Event
		keys[i] = store.EventKey{TenantID: e.TenantID, Kind: e.Kind, ID: e.ID, Time: e.Time}
	}
	found, err := im.st.ExistingIDs(ctx, keys)
	if err != nil {
		return err
	}
	seen := make(map[string]struct{}, len(rows))
	kept := rows[:0]
	for _, r := range rows {
		k := r.Event.TenantID + "\x00" + r.Event.ID
		if _, stored := found[k]; stored {
			p.Dups++
			continue
		}
		if _, dup := seen[k]; dup {
			p.Dups++
			continue
		}
		seen[k] = struct{}{}
		kept = append(kept, r)
	}
	if err := im.st.InsertEvents(ctx, kept, im.now()); err != nil {
		return err
	}
	p.Stored += int64(len(kept))
	return nil
}

// price prices e as the collector would, or says why it cannot be stored.
func (im *Importer) price(e *event.Event) (store.Row, *event.ValidationError) {
	plan, unit := im.pricer.Price(e.TenantID, e.Kind)
	cost := pricing.Cost(e.Quantity, unit)
	if !pricing.Fits(cost) {
		return store.Row{}, &event.ValidationError{Reason: event.ReasonBadQuantity, Field: "quantity",
			Detail: fmt.Sprintf("quantity %s × unit price %s overflows the cost column's Decimal(18, 9)",
				strconv.FormatFloat(e.Quantity, 'g', -1, 64), unit)}
	}
	return store.Row{Event: e, Plan: plan, UnitPrice: unit, Cost: cost, PriceVersion: im.pricer.Version()}, nil
}
