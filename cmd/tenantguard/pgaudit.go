package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/collector/pgstat"
)

// newPgAuditCmd is `tenantguard pg-audit`: one scan of pg_stat_statements
// and the RLS audit. Exit 0 clean, 1 findings, 2 error.
func newPgAuditCmd(a *app) *cobra.Command {
	var (
		dsn      string
		format   string
		minCalls uint64
		timeout  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "pg-audit --dsn DSN [--format text|json] [--min-calls N]",
		Short: "Scan pg_stat_statements for queries that cross tenants and audit RLS (exit 1 on findings)",
		Long: "pg-audit reads pg_stat_statements of one database, analyses every statement with the Postgres\n" +
			"parser, and reports statements that read or write tenant tables without restricting them to one\n" +
			"tenant (unscoped), to a list of tenants (multi_tenant), or that it cannot analyse (unknown), plus\n" +
			"an RLS audit of the tenant tables. The role needs pg_read_all_stats. Exit status: 0 clean,\n" +
			"1 findings, 2 error. The JSON layout is documented in docs/pg-audit.md.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := pgAuditConfig(a)
			if dsn != "" {
				cfg.DSNs = []string{dsn}
			}
			if len(cfg.DSNs) == 0 {
				return &exitError{code: 2, err: errors.New("pg-audit: --dsn is required (or pgstat.dsns in the config)")}
			}
			if cmd.Flags().Changed("min-calls") {
				cfg.MinCalls = minCalls
			}
			if format != "text" && format != "json" {
				return &exitError{code: 2, err: fmt.Errorf("pg-audit: --format must be text or json, got %q", format)}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			code, err := runPgAudit(ctx, cfg, format, a.stdout)
			if err != nil {
				return &exitError{code: code, err: err}
			}
			if code != 0 {
				return &exitError{code: code}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dsn, "dsn", "", "Postgres DSN of the database to audit (default: pgstat.dsns from the config)")
	cmd.Flags().StringVar(&format, "format", "text", "output format: text or json")
	cmd.Flags().Uint64Var(&minCalls, "min-calls", 1, "ignore statements called fewer times (config pgstat.min_calls)")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up after this long")
	return cmd
}

// pgAuditConfig is the pgstat section of the loaded configuration.
func pgAuditConfig(a *app) pgstat.Config {
	cfg := pgstat.DefaultConfig()
	if a.v != nil && a.v.IsSet("pgstat") {
		_ = a.v.UnmarshalKey("pgstat", &cfg)
	}
	if len(cfg.DSNs) == 0 {
		cfg.DSNs = a.cfg.PGStat.DSNs
	}
	return cfg
}

// runPgAudit scans and prints the report; it returns the exit status.
func runPgAudit(ctx context.Context, cfg pgstat.Config, format string, out io.Writer) (int, error) {
	stage, err := pgstat.New(cfg)
	if err != nil {
		return 2, err
	}
	defer stage.Close()
	rep, err := stage.Scan(ctx)
	if err != nil {
		return 2, fmt.Errorf("pg-audit: %w", err)
	}
	if format == "json" {
		err = rep.WriteJSON(out)
	} else {
		err = rep.WriteText(out)
	}
	if err != nil {
		return 2, fmt.Errorf("pg-audit: write report: %w", err)
	}
	if !rep.Clean() {
		return 1, nil
	}
	return 0, nil
}
