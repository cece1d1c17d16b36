package main

import (
	"errors"
	"io"
	"log/slog"

	"github.com/tenantguard/tenantguard/internal/daemon"
	"github.com/tenantguard/tenantguard/internal/redact"

	"github.com/spf13/cobra"
	"github.com/spf13/viper"
)

// app is the state one invocation shares between commands.
type app struct {
	v       *viper.Viper
	cfgFile string
	cfg     daemon.Config
	log     *slog.Logger
	stdout  io.Writer
	stderr  io.Writer
	cfgErr  error // why the config did not load, for --version
}

func newApp(stdout, stderr io.Writer) *app {
	return &app{v: viper.New(), stdout: stdout, stderr: stderr}
}

func (a *app) root() *cobra.Command {
	var showVersion bool
	root := &cobra.Command{
		Use:           "tenantguard",
		Short:         "Per-tenant metering, observability and noisy-neighbour guard",
		Long:          "tenantguard meters usage per tenant from NATS JetStream into ClickHouse, shows it as\nPrometheus metrics, bills it, guards shared services from noisy tenants, and audits Postgres\nfor queries that cross tenants.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if showVersion {
				a.printVersion(cmd.Context(), a.cfgErr)
				return nil
			}
			return cmd.Help()
		},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := a.load(cmd); err != nil {
				if cmd == cmd.Root() && showVersion {
					a.cfgErr = err // --version still answers, without ClickHouse's
					return nil
				}
				var invalid *configError
				if errors.As(err, &invalid) && cmd.Annotations[strictConfig] != "" {
					return findings(err) // the check failed
				}
				return &exitError{code: 2, err: err}
			}
			return nil
		},
	}
	root.Flags().BoolVar(&showVersion, "version", false, "print the version, the commit, the Go version and the version of the ClickHouse server the config points at")
	root.PersistentFlags().StringVar(&a.cfgFile, "config", "", "config file (default $TENANTGUARD_CONFIG, then ./tenantguard.yaml, then the dev stack's .tenantguard/tenantguard.yaml except for run and dev, then /etc/tenantguard/tenantguard.yaml)")
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().String("nats-url", "", "NATS server(s), comma-separated (config nats.url)")
	root.PersistentFlags().String("clickhouse-addr", "", "ClickHouse native address(es), comma-separated (config clickhouse.addr)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{code: 2, err: err} })
	root.AddCommand(
		newRunCmd(a),
		newMigrateCmd(a),
		newDevCmd(a),
		newLoadgenCmd(a),
		newConfigCmd(a),
		newPgAuditCmd(a),
		newBenchCmd(a),
		newDeleteTenantCmd(a),
		newExportCmd(a),
		newReplayCmd(a),
		newAnomalyEvalCmd(a),
		newThrottleCmd(a),
		newReleaseCmd(a),
		newDecisionsCmd(a),
		newKeygenCmd(a),
		newCorrectCmd(a),
		newImportCmd(a),
		newAdviseCmd(a),
	)
	return root
}

func (a *app) logger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(redact.Handler{Next: slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: l})})
}
