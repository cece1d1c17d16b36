package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/internal/daemon"
	"github.com/tenantguard/tenantguard/internal/provision"
	"github.com/tenantguard/tenantguard/limiter"
)

func newThrottleCmd(a *app) *cobra.Command {
	var (
		tenant, scope, reason string
		ratePerSec            float64
		burst                 uint32
		ttl                   time.Duration
		noAudit, shadow       bool
	)
	cmd := &cobra.Command{
		Use:   "throttle --tenant T --rate N [--burst B] [--for D] [--reason R] [--shadow]",
		Short: "Throttle a tenant cluster-wide (a manual decision; outranks automatic ones until it expires)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("rate") {
				return usageErr(errors.New("--rate is required"))
			}
			if !event.ValidTenantID(tenant) {
				return usageErr(fmt.Errorf("--tenant %q must match %s", tenant, event.TenantPattern))
			}
			if ttl <= 0 {
				return usageErr(errors.New("--for must be > 0"))
			}
			if limit := a.cfg.Decisions.MaxManualTTL; ttl > limit {
				return usageErr(fmt.Errorf("--for %s is longer than decisions.max_manual_ttl (%s): "+
					"a manual decision lasts at most that long; release it sooner or renew it", ttl, limit))
			}
			if math.IsNaN(ratePerSec) || math.IsInf(ratePerSec, 0) || ratePerSec < 0 {
				return usageErr(errors.New("--rate must be a finite number >= 0"))
			}
			if err := limiter.CheckText(reason); err != nil {
				return usageErr(fmt.Errorf("--reason: %w", err))
			}
			now := time.Now().UTC().Truncate(time.Second)
			d := limiter.Decision{TenantID: tenant, Scope: scope, Action: limiter.ActionThrottle,
				RatePerSec: ratePerSec, Burst: burst, IssuedAt: now, ExpiresAt: now.Add(ttl),
				Reason: reason, Source: limiter.SourceManual}
			if ratePerSec == 0 {
				d.Action = limiter.ActionShed
			} else if d.Burst == 0 {
				// Publish the burst limiters would derive, so the bucket
				// and its audit trail carry the burst printed below.
				d.Burst = uint32(d.EffectiveBurst())
			}
			if shadow {
				d.Mode = limiter.ModeShadow
			}
			if err := d.Validate(); err != nil {
				return usageErr(err)
			}
			err := a.withPublisher(cmd.Context(), true, func(ctx context.Context, pub *limiter.Publisher) error {
				_, err := pub.Put(ctx, d)
				return err
			})
			if errors.Is(err, limiter.ErrExpiryTooFar) || errors.Is(err, limiter.ErrInvalidDecision) {
				return usageErr(err)
			}
			if err != nil {
				return err
			}
			mode := ""
			if shadow {
				mode = " in shadow mode: limiters count what it would reject and reject nothing"
			}
			until := d.ExpiresAt.Format(time.RFC3339)
			if d.Action == limiter.ActionShed {
				fmt.Fprintf(a.stdout, "shed %s (%s): every request refused until %s%s\n", tenant, scope, until, mode)
				return nil
			}
			fmt.Fprintf(a.stdout, "throttle %s (%s): %g/s, burst %d, until %s%s\n", tenant, scope, ratePerSec, d.Burst, until, mode)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&tenant, "tenant", "", "tenant id (required)")
	f.Float64Var(&ratePerSec, "rate", 0, "cluster-wide requests per second (required; 0 sheds the tenant)")
	f.Uint32Var(&burst, "burst", 0, "cluster-wide burst (default max(1, ceil(rate)))")
	f.DurationVar(&ttl, "for", time.Hour, "how long the decision lasts")
	f.StringVar(&reason, "reason", "manual throttle", "why, for the audit trail")
	f.StringVar(&scope, "scope", limiter.ScopeAll, "all, route:<route>, integration:<name> or user:<id>")
	f.BoolVar(&shadow, "shadow", false, `publish it with "mode":"shadow": limiters allow every request and count what it would have rejected`)
	f.BoolVar(&noAudit, "no-audit", false, "ignored: the daemon records every decision in the bucket")
	_ = f.MarkDeprecated("no-audit", "the daemon records every decision it sees in the bucket")
	_ = cmd.MarkFlagRequired("tenant")
	return cmd
}

func newReleaseCmd(a *app) *cobra.Command {
	var (
		tenant, scope string
		noAudit       bool
	)
	cmd := &cobra.Command{
		Use:   "release --tenant T",
		Short: "Clear a tenant's decision (manual or automatic) for a scope",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := limiter.Key(tenant, scope); err != nil {
				return usageErr(err)
			}
			err := a.withPublisher(cmd.Context(), true, func(ctx context.Context, pub *limiter.Publisher) error {
				return pub.Clear(ctx, tenant, scope, limiter.SourceManual)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "released %s (%s)\n", tenant, scope)
			return nil
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "tenant id (required)")
	cmd.Flags().StringVar(&scope, "scope", limiter.ScopeAll, "all, route:<route> or integration:<name>")
	cmd.Flags().BoolVar(&noAudit, "no-audit", false, "ignored: the daemon records every decision in the bucket")
	_ = cmd.Flags().MarkDeprecated("no-audit", "the daemon records every decision it sees in the bucket")
	_ = cmd.MarkFlagRequired("tenant")
	return cmd
}

// withPublisher runs fn with a decisions publisher (see
// daemon.OpenPublisher; sign requires the signing key), all within 15 s.
func (a *app) withPublisher(ctx context.Context, sign bool, fn func(context.Context, *limiter.Publisher) error) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	pub, closeNC, err := daemon.OpenPublisher(ctx, a.cfg, a.log, sign)
	if errors.Is(err, provision.ErrMissing) {
		return findings(err) // the CLI never creates the bucket: exit 1
	}
	if err != nil {
		return err
	}
	defer closeNC()
	return fn(ctx, pub)
}
