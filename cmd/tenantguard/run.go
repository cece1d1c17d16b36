package main

import (
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/internal/daemon"
)

func newRunCmd(a *app) *cobra.Command {
	var cpuProfile string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the daemon: the stages switched on in config",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			stopProfile, err := startCPUProfile(cpuProfile)
			if err != nil {
				return err
			}
			defer stopProfile()
			d, err := a.newDaemon(nil)
			if err != nil {
				return err
			}
			return d.Run(ctx)
		},
	}
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the daemon to this file until it stops")
	return cmd
}

// newDaemon builds the daemon from the loaded config, with the decisions
// signing key resolved (the default key is made on first use).
func (a *app) newDaemon(started func(*daemon.Daemon)) (*daemon.Daemon, error) {
	if a.cfg.Decisions.Enabled {
		path, err := daemon.SigningKeyFile(a.cfg.Decisions, true, a.log)
		if err != nil {
			return nil, err
		}
		a.cfg.Decisions.SigningKeyFile = path
	}
	return daemon.New(a.cfg, daemon.Options{Logger: a.log, Started: started})
}

// startCPUProfile writes a CPU profile to path until the returned func is
// called; an empty path profiles nothing.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
