package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tenantguard/tenantguard/internal/devstack"

	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/anomaly"
	"github.com/tenantguard/tenantguard/internal/daemon"
)

func newReplayCmd(a *app) *cobra.Command {
	var (
		input, format, from, to string
		strict, fromCH          bool
		flush                   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "replay --input FILE [--format json] | --from-clickhouse --from T --to T",
		Short: "Backtest the anomaly detector over NDJSON events, CSV rollups or stored usage_1m history",
		Long: "replay runs the daemon's detector on a simulated clock and writes one JSON object per\n" +
			"alert episode (tenant_id, metric, kind, starts_at, ends_at, observed, baseline, ratio,\n" +
			"severity). Input: NDJSON events (wire format v1) or CSV with the header\n" +
			"minute,tenant_id,kind,count,quantity,errors,latency_p95_ms (minute RFC 3339 or Unix\n" +
			"seconds; optional cost and latency_count columns). Malformed lines are reported on\n" +
			"stderr with their line number and skipped, or stop the replay under --strict.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "json" {
				return usageErr(fmt.Errorf("--format: %q is not supported (json)", format))
			}
			cfg, planOf, err := daemon.AnomalyConfig(a.cfg)
			if err != nil {
				return usageErr(err)
			}
			ctx := cmd.Context()
			var eps []anomaly.Episode
			var span anomaly.Span
			bad := 0
			switch {
			case fromCH:
				if input != "" {
					return usageErr(errors.New("--input and --from-clickhouse are exclusive"))
				}
				f, err := parseWhen("--from", from)
				if err != nil {
					return usageErr(err)
				}
				t, err := parseWhen("--to", to)
				if err != nil {
					return usageErr(err)
				}
				if !t.After(f) {
					return usageErr(errors.New("--to must be after --from"))
				}
				eps, span, err = daemon.ReplayClickHouse(ctx, a.cfg.ClickHouse, cfg, planOf, f, t, flush, a.stderr)
				if err != nil {
					return err
				}
			case input != "":
				in := io.Reader(os.Stdin)
				if input != "-" {
					fh, err := os.Open(input)
					if err != nil {
						return usageErr(err)
					}
					defer fh.Close()
					in = fh
				}
				eps, err = anomaly.ReplayReader(ctx, cfg, in, anomaly.ReplayOptions{
					Detector: []anomaly.Option{planOf},
					Strict:   strict,
					Flush:    flush,
					Span:     &span,
					OnError: func(le *anomaly.LineError) {
						bad++
						if bad <= 100 {
							fmt.Fprintf(a.stderr, "%s: %v\n", input, le)
						}
					},
				})
				if err != nil {
					var le *anomaly.LineError
					if errors.As(err, &le) {
						return usageErr(fmt.Errorf("%s: %w", input, err))
					}
					return err
				}
			default:
				return usageErr(errors.New("give --input FILE or --from-clickhouse --from T --to T"))
			}
			w := bufio.NewWriter(a.stdout)
			enc := json.NewEncoder(w)
			for i := range eps {
				if err := enc.Encode(&eps[i]); err != nil {
					return err
				}
			}
			if err := w.Flush(); err != nil {
				return err
			}
			if bad > 0 {
				fmt.Fprintf(a.stderr, "%d malformed lines skipped\n", bad)
			}
			fmt.Fprintln(a.stderr, replaySummary(span, cfg.WarmupWindows, len(eps)))
			return nil
		},
	}
	cmd.Flags().StringVar(&input, "input", "", "NDJSON events or CSV rollups; - is stdin")
	cmd.Flags().StringVar(&format, "format", "json", "output format: json (NDJSON, one episode per line)")
	cmd.Flags().BoolVar(&strict, "strict", false, "stop at the first malformed line")
	cmd.Flags().BoolVar(&fromCH, "from-clickhouse", false, "replay usage_1m from ClickHouse (config clickhouse.*)")
	cmd.Flags().StringVar(&from, "from", "", "with --from-clickhouse: start, RFC 3339 or date (inclusive)")
	cmd.Flags().StringVar(&to, "to", "", "with --from-clickhouse: end, RFC 3339 or date (exclusive)")
	cmd.Flags().DurationVar(&flush, "flush", 15*time.Minute, "keep evaluating this long after the last input so ended spikes resolve")
	return cmd
}

// replaySummary is the line replay ends with on stderr: how much history
// it judged, and plainly when the history is too short for the warmup, so
// that no output never reads as "no anomalies".
func replaySummary(span anomaly.Span, warmup, episodes int) string {
	switch {
	case span.Windows == 0:
		return "replay: the input holds no usage: nothing to judge"
	case span.Windows <= warmup:
		hint := "Replay a longer range"
		if warmup > devstack.DemoWarmup {
			hint += fmt.Sprintf(", or set a shorter warmup (TENANTGUARD_ANOMALY_WARMUP_WINDOWS=%d, as `tenantguard dev --demo` does)", devstack.DemoWarmup)
		}
		return fmt.Sprintf("replay: history too short to judge: %d one-minute windows (%s to %s), and a series learns its "+
			"baseline for anomaly.warmup_windows = %d windows before it may alert. %s",
			span.Windows, span.First.Format(time.RFC3339), span.Last.Add(time.Minute).Format(time.RFC3339), warmup, hint)
	}
	return fmt.Sprintf("replay: %d one-minute windows (%s to %s), the first %d of each series learning: %d alert episodes",
		span.Windows, span.First.Format(time.RFC3339), span.Last.Add(time.Minute).Format(time.RFC3339), warmup, episodes)
}
