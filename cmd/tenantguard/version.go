package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/collector/store"
	"github.com/tenantguard/tenantguard/internal/redact"
)

// versionTimeout bounds how long --version waits for ClickHouse.
const versionTimeout = 2 * time.Second

// buildVersion is the module version and the VCS commit the binary was
// built from, as the Go toolchain stamped them: "(devel)" and "unknown"
// when it stamped nothing (a build outside a git checkout, -buildvcs=false).
func buildVersion() (version, commit string) {
	version, commit = "(devel)", "unknown"
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return version, commit
	}
	if info.Main.Version != "" {
		version = info.Main.Version
	}
	var rev, at string
	modified := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev != "" {
		commit = rev
		var notes []string
		if at != "" {
			notes = append(notes, at)
		}
		if modified {
			notes = append(notes, "with local changes")
		}
		if len(notes) > 0 {
			commit += " (" + strings.Join(notes, ", ") + ")"
		}
	}
	return version, commit
}

// printVersion writes the version, the commit, the Go version, and the
// version of the ClickHouse server the config points at, asked within
// versionTimeout. An unreachable server is reported, not an error.
func (a *app) printVersion(ctx context.Context, cfgErr error) {
	version, commit := buildVersion()
	fmt.Fprintf(a.stdout, "tenantguard %s\ncommit      %s\ngo          %s %s/%s\n",
		version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if cfgErr != nil {
		fmt.Fprintf(a.stdout, "clickhouse  not asked: the config does not load (%s)\n", redact.String(firstLine(cfgErr.Error())))
		return
	}
	addr := strings.Join(a.cfg.ClickHouse.Addr, ",")
	v, err := store.AskVersion(ctx, a.cfg.ClickHouse, versionTimeout)
	if err != nil {
		fmt.Fprintf(a.stdout, "clickhouse  not reachable at %s within %s (config: %s)\n", addr, versionTimeout, a.configSource())
		return
	}
	fmt.Fprintf(a.stdout, "clickhouse  %s at %s (config: %s)\n", v, addr, a.configSource())
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
