package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/collector/backfill"
	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/daemon"
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
			st, err := store.Open(cmd.Context(), a.cfg.ClickHouse)
			if err != nil {
				return err
			}
			defer st.Close()
			im, err := daemon.NewImporter(a.cfg, st, allowOlder, batchRows)
			if err != nil {
				return usageErr(err)
			}
			var mu sync.Mutex
			var last backfill.Progress
			start := time.Now()
			p := progress.Start(a.stderr, !silent, 10*time.Second, func() string {
				mu.Lock()
				defer mu.Unlock()
				return last.Line(size, time.Since(start))
			})
			sum, err := im.Import(cmd.Context(), r, f, func(s backfill.Progress) { mu.Lock(); last = s; mu.Unlock() })
			p.Stop()
			sum.WriteText(a.stderr, input)
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
