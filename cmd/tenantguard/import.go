package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/collector/backfill"
	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/pricing"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/progress"
)

func newImportCmd(a *app) *cobra.Command {
	var (
		input, format      string
		allowOlder, silent bool
		batchRows          int
	)
	cmd := &cobra.Command{
		Use:   "import --input F [--format auto|ndjson|csv] [--allow-older]",
		Short: "Backfill usage history into ClickHouse with its original times (validated, priced and deduplicated like live events)",
		Long: "Import NDJSON (wire format v1, as `export events` writes it) or CSV (a header of wire field\n" +
			"names) into the events table. Each line goes through the collector's validation, today's price\n" +
			"book and the dedup lookup, so importing a file twice stores it once. Events older than\n" +
			"collector.lateness need --allow-older. The import writes to ClickHouse directly, not through the\n" +
			"live stream: history raises no live alerts or throttles. A rejected line is reported with its\n" +
			"line number and stores nothing; the rest is imported. Exit status: 0 all imported (or already\n" +
			"there), 1 some lines rejected, 2 usage or runtime error.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := backfill.Format(format)
			switch format {
			case "auto":
				f = backfill.FormatAuto
			case "ndjson", "csv":
			default:
				return usageErr(fmt.Errorf("--format %q must be auto, ndjson or csv", format))
			}
			if input == "" {
				return usageErr(errors.New("--input is required (- is stdin)"))
			}
			var r io.Reader = cmd.InOrStdin()
			var size int64
			if input != "-" {
				file, err := os.Open(input)
				if err != nil {
					return usageErr(err)
				}
				defer file.Close()
				if fi, err := file.Stat(); err == nil {
					size = fi.Size()
				}
				r = file
				if f == backfill.FormatAuto {
					f = backfill.DetectFormat(input, nil) // by extension; else sniffed
				}
			}
			cfg := a.cfg
			validator, err := event.NewValidator(event.Rules{CustomKinds: cfg.Collector.CustomKinds})
			if err != nil {
				return usageErr(err)
			}
			book, err := pricing.New(cfg.Pricing, validator.KnownKind)
			if err != nil {
				return usageErr(err)
			}
			st, err := store.Open(cmd.Context(), cfg.ClickHouse)
			if err != nil {
				return err
			}
			defer st.Close()
			icfg := backfill.DefaultConfig()
			icfg.Lateness, icfg.AllowOlder, icfg.CustomKinds = cfg.Collector.Lateness, allowOlder, cfg.Collector.CustomKinds
			if batchRows > 0 {
				icfg.BatchRows = batchRows
			}
			im, err := backfill.New(icfg, st, book)
			if err != nil {
				return usageErr(err)
			}
			var mu sync.Mutex
			var last backfill.Progress
			start := time.Now()
			p := progress.Start(a.stderr, !silent, 10*time.Second, func() string {
				mu.Lock()
				defer mu.Unlock()
				return importLine(last, size, time.Since(start))
			})
			sum, err := im.Import(cmd.Context(), r, f, func(s backfill.Progress) { mu.Lock(); last = s; mu.Unlock() })
			p.Stop()
			printImportSummary(a.stderr, input, sum)
			if err != nil {
				return fmt.Errorf("import stopped: %w (what was stored stays; running the same input again adds only the rest)", err)
			}
			if sum.Rejected > 0 {
				return findings(fmt.Errorf("%d of %d lines rejected", sum.Rejected, sum.Read))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&input, "input", "", "the file to import; - is stdin")
	cmd.Flags().StringVar(&format, "format", "auto", "auto (by extension, then content), ndjson or csv")
	cmd.Flags().BoolVar(&allowOlder, "allow-older", false, "accept events older than collector.lateness (back to 1970)")
	cmd.Flags().BoolVar(&silent, "no-progress", false, "no progress on stderr (the summary is still printed)")
	cmd.Flags().IntVar(&batchRows, "batch-rows", 0, "events per dedup lookup and insert (default 50000)")
	return cmd
}

// importLine is the import's status: a bar when the input's size is known,
// and the counts.
func importLine(s backfill.Progress, size int64, elapsed time.Duration) string {
	line := fmt.Sprintf("import: %d read, %d stored, %d duplicates, %d rejected, %.0f events/s",
		s.Read, s.Stored, s.Dups, s.Bad, float64(s.Read)/max(elapsed.Seconds(), 1e-9))
	if size > 0 {
		frac := min(1, float64(s.Bytes)/float64(size))
		n := int(frac * 30)
		line = fmt.Sprintf("[%s%s] %3.0f%% %s", strings.Repeat("#", n), strings.Repeat(".", 30-n), frac*100, line)
	}
	return line
}

func printImportSummary(w io.Writer, input string, sum backfill.Summary) {
	rate := 0.0
	if sum.Elapsed > 0 {
		rate = float64(sum.Read) / sum.Elapsed.Seconds()
	}
	fmt.Fprintf(w, "import %s: read %d, stored %d, duplicates %d, rejected %d in %s (%.0f events/s)\n",
		input, sum.Read, sum.Stored, sum.Duplicates, sum.Rejected, sum.Elapsed.Round(time.Millisecond), rate)
	if sum.Rejected == 0 {
		return
	}
	fmt.Fprintf(w, "rejected by reason: %s\n", strings.Join(sum.ReasonCounts(), ", "))
	for _, e := range sum.Errors {
		fmt.Fprintf(w, "  %s\n", e)
	}
	if more := sum.Rejected - int64(len(sum.Errors)); more > 0 {
		fmt.Fprintf(w, "  ... and %d more\n", more)
	}
}
