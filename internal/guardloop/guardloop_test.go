package guardloop

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/limiter"
)

// releaseOverrides shorten only the release half of TestGuardLoop. The
// detector resolves a usage episode once each window's own ratio has stayed
// under the resolve ratio for quiet_period (docs/anomaly.md), so an episode
// ends about quiet_period plus a window after the spike; the default 5m
// quiet period would make the test wait that much longer. 1m is the
// smallest value anomaly.quiet_period accepts. Detection, the throttle and
// its rate use the defaults.
var releaseOverrides = map[string]string{"TENANTGUARD_ANOMALY_QUIET_PERIOD": "1m"}

// TestGuardLoop runs the whole guard loop end to end: a service process
// with the limiter SDK serves 20 tenants and emits a usage event per allowed
// request; the daemon (`tenantguard run`, another process) ingests them,
// detects the noisy tenant's 5x spike against baselines warm-started from
// three hours of seeded history, and publishes a throttle decision that the
// service applies. Only the noisy tenant may ever be rejected or throttled,
// and it is released after its spike.
func TestGuardLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon for several minutes")
	}
	start := time.Now()
	r := newRig(t, releaseOverrides)
	svc := r.service
	normal := rateOf(noisyID)

	// 30 s of normal traffic, then the spike (at whatever second of the
	// minute that is; TestGuardLoopSpikeToThrottle measures over many).
	first := svc.waitReport(t, 30*time.Second, "first service report", func(report) bool { return true })
	time.Sleep(time.Until(time.UnixMilli(first.TimeMs).Add(30 * time.Second)))
	if rej := svc.reportAt(t, time.Now()).Rejected[noisyID]; rej != 0 {
		t.Fatalf("%s: %d requests rejected before its spike, want 0", noisyID, rej)
	}
	spikeAt := svc.command(t, "spike", noisyID, strconv.FormatFloat(spikeFactor, 'f', -1, 64))
	t.Logf("spike: %s at %.1f/s -> %.1f/s from %s (second %d of the minute)", noisyID, normal, normal*spikeFactor, spikeAt.Format(time.TimeOnly), spikeAt.Second())

	// The throttle decision, and the service's first rejection.
	dec := r.kv.wait(t, svc, spikeAt, 6*time.Minute, "throttle decision for "+noisyID, func(e kvEntry) bool {
		return e.Tenant == noisyID && !e.Delete && e.Decision.Action == limiter.ActionThrottle
	})
	rejRep := svc.waitReport(t, time.Minute, "first rejection of "+noisyID, func(rp report) bool { return rp.FirstReject[noisyID] != 0 })
	firstReject := time.UnixMilli(rejRep.FirstReject[noisyID])
	d := dec.Decision
	t.Logf("decision %s: throttle %.3g/s burst %d, source %s, reason %q", dec.At.Format(time.TimeOnly), d.RatePerSec, d.EffectiveBurst(), d.Source, d.Reason)
	t.Logf("spike -> decision in KV %.1fs, -> first rejection (enforced throttle) %.1fs; target <= 60s",
		dec.At.Sub(spikeAt).Seconds(), firstReject.Sub(spikeAt).Seconds())
	if firstReject.Before(dec.At.Add(-time.Second)) {
		t.Fatalf("first rejection at %s, before the decision reached the bucket at %s", firstReject.Format(time.TimeOnly), dec.At.Format(time.TimeOnly))
	}
	if d.Source != limiter.SourceAnomaly || d.Scope != limiter.ScopeAll {
		t.Errorf("decision source %s scope %s, want anomaly, all", d.Source, d.Scope)
	}
	// decisions.throttle_factor 2 x the learned baseline, which the seeded
	// history put at the tenant's normal rate.
	if d.RatePerSec < 1.4*normal || d.RatePerSec > 2.8*normal {
		t.Errorf("throttle at %.3g/s, want about 2 x the normal %.3g/s", d.RatePerSec, normal)
	}
	cli := r.cliDecisions(t)
	if len(cli) != 1 || cli[0].TenantID != noisyID || cli[0].Action != limiter.ActionThrottle {
		t.Errorf("tenantguard decisions --format json = %+v, want one throttle of %s", cli, noisyID)
	}

	// The service rejects the excess: over 15 s of the throttled spike the
	// tenant gets about the decision's rate and the rest is rejected.
	const hold = 15 * time.Second
	from := svc.reportAt(t, firstReject.Add(time.Second))
	to := svc.reportAt(t, time.UnixMilli(from.TimeMs).Add(hold))
	a0, r0 := counts(from, noisyID)
	a1, r1 := counts(to, noisyID)
	secs := float64(to.TimeMs-from.TimeMs) / 1000
	allowedRate, rejectedShare := float64(a1-a0)/secs, float64(r1-r0)/float64(a1-a0+r1-r0)
	t.Logf("throttled: %.2f/s allowed (limit %.3g/s), %.0f%% of %.2f/s rejected", allowedRate, d.RatePerSec, 100*rejectedShare, float64(a1-a0+r1-r0)/secs)
	if allowedRate > 1.3*d.RatePerSec+float64(d.EffectiveBurst())/secs {
		t.Errorf("%s allowed %.2f/s while throttled to %.3g/s", noisyID, allowedRate, d.RatePerSec)
	}
	if rejectedShare < 0.3 {
		t.Errorf("%s: %.0f%% of its 5x traffic rejected, want the excess (about 60%%)", noisyID, 100*rejectedShare)
	}

	// The spike ends; the detector resolves, the engine clears the
	// decision, the service drops the limit, and nothing more is rejected.
	calmAt := svc.command(t, "calm", noisyID)
	clr := r.kv.wait(t, svc, calmAt, 12*time.Minute, "clear of "+noisyID, func(e kvEntry) bool {
		return e.Tenant == noisyID && (e.Delete || e.Decision.Action == limiter.ActionClear)
	})
	calmRep := svc.reportAt(t, calmAt.Add(2*time.Second))
	released := svc.waitReport(t, 10*time.Second, "service drops the limit of "+noisyID, func(rp report) bool {
		_, limited := rp.Limited[noisyID]
		return rp.TimeMs >= clr.At.UnixMilli() && !limited
	})
	_, rc := counts(calmRep, noisyID)
	_, rr := counts(released, noisyID)
	t.Logf("spike end %s -> decision cleared %.0fs later; %d requests rejected meanwhile at the normal rate (limit 2x, burst %d)",
		calmAt.Format(time.TimeOnly), clr.At.Sub(calmAt).Seconds(), rr-rc, d.EffectiveBurst())
	after := svc.reportAt(t, time.UnixMilli(released.TimeMs).Add(10*time.Second))
	aa, ra := counts(after, noisyID)
	ab, _ := counts(released, noisyID)
	if ra != rr {
		t.Errorf("%s: %d requests rejected after its decision was cleared, want 0", noisyID, ra-rr)
	}
	if aa-ab < int64(5*normal) {
		t.Errorf("%s: %d requests allowed in the 10 s after release, want its normal traffic (~%.0f)", noisyID, aa-ab, 10*normal)
	}
	if len(r.cliDecisions(t)) != 0 {
		t.Errorf("tenantguard decisions lists live decisions after the release, want none")
	}

	// Nobody else was touched, and the audit trail has the episode.
	r.untouched(t, map[string]bool{noisyID: true})
	var actions []string
	for _, a := range r.audit(t) {
		if a.Tenant != noisyID {
			t.Errorf("ClickHouse decisions: %+v, want rows of %s only", a, noisyID)
		}
		actions = append(actions, a.Action)
	}
	if len(actions) < 2 || actions[0] != string(limiter.ActionThrottle) || actions[len(actions)-1] != string(limiter.ActionClear) {
		t.Errorf("ClickHouse decisions actions %v, want throttle (renewals) ... clear", actions)
	}
	t.Logf("guard loop: spike->throttle enforced %.1fs (decision %.1fs), released %.0fs after the spike ended; test took %s",
		firstReject.Sub(spikeAt).Seconds(), dec.At.Sub(spikeAt).Seconds(), clr.At.Sub(calmAt).Seconds(), time.Since(start).Round(time.Second))
}

var spikes = flag.Int("guardloop.spikes", 0, "TestGuardLoopSpikeToThrottle: number of spikes to measure (0 skips it)")

// spikeResult is one measured spike.
type spikeResult struct {
	Tenant   string
	Start    time.Time
	Decision time.Duration // spike start -> throttle decision in the bucket
	Enforced time.Duration // spike start -> first rejection in the service
	Err      string
}

// TestGuardLoopSpikeToThrottle measures spike start -> enforced throttle
// over several spikes with every setting at its default, each on its own
// tenant and starting at a random second of the minute (spikes overlap to
// save time; tenants are independent in the detector). It runs only with
// -guardloop.spikes=N; see docs/guardloop.md.
func TestGuardLoopSpikeToThrottle(t *testing.T) {
	if *spikes <= 0 {
		t.Skip("measurement: run with -guardloop.spikes=N (about 1 minute per spike)")
	}
	var candidates []string // mid-size tenants first, then the rest
	for i, tl := range tenants() {
		if i >= 2 {
			candidates = append(candidates, tl.ID)
		}
	}
	if *spikes > len(candidates) {
		t.Fatalf("-guardloop.spikes=%d: at most %d tenants can spike", *spikes, len(candidates))
	}
	r := newRig(t, nil)
	svc := r.service
	svc.waitReport(t, 30*time.Second, "first service report", func(report) bool { return true })
	time.Sleep(30 * time.Second)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))

	results := make([]spikeResult, *spikes)
	spiked := map[string]bool{}
	var wg sync.WaitGroup
	var mu sync.Mutex // t.Fatal must stay on the test goroutine: workers record errors
	next := time.Now()
	for i := range results {
		next = next.Add(30*time.Second + time.Duration(rng.Float64()*float64(time.Minute)))
		time.Sleep(time.Until(next))
		svc.check(t)
		tenant := candidates[i]
		spiked[tenant] = true
		at := svc.command(t, "spike", tenant, strconv.FormatFloat(spikeFactor, 'f', -1, 64))
		t.Logf("spike %d: %s %.2f/s x%g from %s (second %d)", i+1, tenant, rateOf(tenant), spikeFactor, at.Format(time.TimeOnly), at.Second())
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := measureSpike(r, tenant, at, 6*time.Minute)
			mu.Lock()
			results[i] = res
			mu.Unlock()
			if res.Err == "" {
				time.Sleep(10 * time.Second) // let it be throttled a while
			}
			mu.Lock()
			defer mu.Unlock()
			if err := svc.send("calm " + tenant + "\n"); err != nil && results[i].Err == "" {
				results[i].Err = err.Error()
			}
		}()
	}
	wg.Wait()
	r.untouched(t, spiked)

	var enforced, decided []float64
	var lines []string
	for i, res := range results {
		if res.Err != "" {
			t.Errorf("spike %d (%s): %s", i+1, res.Tenant, res.Err)
			continue
		}
		enforced = append(enforced, res.Enforced.Seconds())
		decided = append(decided, res.Decision.Seconds())
		lines = append(lines, fmt.Sprintf("%-10s second %2d: decision %5.1fs, enforced %5.1fs", res.Tenant, res.Start.Second(), res.Decision.Seconds(), res.Enforced.Seconds()))
	}
	t.Logf("spike -> throttle, %d spikes, default settings:\n  %s", len(enforced), strings.Join(lines, "\n  "))
	if len(enforced) > 0 {
		t.Logf("spike -> enforced throttle: median %.1fs, min %.1fs, max %.1fs (decision in KV: median %.1fs); target <= 60s",
			median(enforced), slices.Min(enforced), slices.Max(enforced), median(decided))
	}
}

// measureSpike waits for tenant's throttle decision and first rejection
// after a spike that started at at. It runs on a worker goroutine, so it
// reports failures in the result instead of failing the test.
func measureSpike(r *rig, tenant string, at time.Time, timeout time.Duration) spikeResult {
	res := spikeResult{Tenant: tenant, Start: at}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if res.Decision == 0 {
			es, _ := r.kv.snapshot()
			for _, e := range es {
				if e.Tenant == tenant && !e.Delete && e.Decision.Action == limiter.ActionThrottle && !e.At.Before(at) {
					res.Decision = e.At.Sub(at)
					break
				}
			}
		}
		if rs := r.service.snapshot(); len(rs) > 0 {
			if ms := rs[len(rs)-1].FirstReject[tenant]; ms != 0 && res.Decision != 0 {
				res.Enforced = time.UnixMilli(ms).Sub(at)
				return res
			}
		}
		if r.service.Exited() {
			res.Err = "service exited"
			return res
		}
		time.Sleep(100 * time.Millisecond)
	}
	res.Err = fmt.Sprintf("not throttled within %s (decision after %s)", timeout, res.Decision)
	return res
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// TestGuardLoopShadow runs the guard loop with decisions.mode: shadow. The
// noisy tenant's spike gets its throttle decision, marked shadow, and the
// service's limiter rejects nothing: it only counts what it would have
// rejected, for that tenant alone.
func TestGuardLoopShadow(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon for several minutes")
	}
	r := newRig(t, map[string]string{"TENANTGUARD_DECISIONS_MODE": "shadow"})
	svc := r.service
	first := svc.waitReport(t, 30*time.Second, "first service report", func(report) bool { return true })
	time.Sleep(time.Until(time.UnixMilli(first.TimeMs).Add(30 * time.Second)))
	spikeAt := svc.command(t, "spike", noisyID, strconv.FormatFloat(spikeFactor, 'f', -1, 64))
	dec := r.kv.wait(t, svc, spikeAt, 6*time.Minute, "shadow throttle decision for "+noisyID, func(e kvEntry) bool {
		return e.Tenant == noisyID && !e.Delete && e.Decision.Action == limiter.ActionThrottle
	})
	if dec.Decision.Mode != limiter.ModeShadow {
		t.Fatalf("decision mode %q, want shadow", dec.Decision.Mode)
	}
	t.Logf("spike -> shadow decision %.1fs: throttle %.3g/s", dec.At.Sub(spikeAt).Seconds(), dec.Decision.RatePerSec)
	rep := svc.waitReport(t, time.Minute, "shadow rejections of "+noisyID, func(rp report) bool { return rp.ShadowRejected[noisyID] > 20 })
	later := svc.reportAt(t, time.UnixMilli(rep.TimeMs).Add(10*time.Second))
	for tenant, n := range later.Rejected {
		if n != 0 {
			t.Errorf("%s: %d requests rejected under shadow mode, want 0", tenant, n)
		}
	}
	for tenant, n := range later.ShadowRejected {
		if tenant != noisyID && n != 0 {
			t.Errorf("%s: %v shadow rejections, want only %s's", tenant, n, noisyID)
		}
	}
	t.Logf("%s: %v requests would have been rejected, none were", noisyID, later.ShadowRejected[noisyID])
}

// TestGuardLoopUserSpike: one user of the noisy tenant sends the spike's
// extra traffic alone. The daemon throttles that user (scope user:<id>),
// not the tenant: the tenant's other users are never rejected.
func TestGuardLoopUserSpike(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon for several minutes")
	}
	const heavy = "u_heavy"
	r := newRig(t, nil)
	svc := r.service
	first := svc.waitReport(t, 30*time.Second, "first service report", func(report) bool { return true })
	time.Sleep(time.Until(time.UnixMilli(first.TimeMs).Add(30 * time.Second)))
	spikeAt := svc.command(t, "spike-user", noisyID, heavy, strconv.FormatFloat(spikeFactor, 'f', -1, 64))
	dec := r.kv.wait(t, svc, spikeAt, 6*time.Minute, "user throttle for "+heavy, func(e kvEntry) bool {
		return e.Tenant == noisyID && !e.Delete && e.Decision.Action == limiter.ActionThrottle
	})
	if dec.Decision.Scope != limiter.ScopeUserPrefix+heavy {
		t.Fatalf("decision scope %q, want %s%s (the user, not the tenant)", dec.Decision.Scope, limiter.ScopeUserPrefix, heavy)
	}
	t.Logf("spike -> user decision %.1fs: throttle %s at %.3g/s", dec.At.Sub(spikeAt).Seconds(), dec.Decision.Scope, dec.Decision.RatePerSec)
	rep := svc.waitReport(t, time.Minute, "rejections of "+heavy, func(rp report) bool { return rp.UserRejected[noisyID+"/"+heavy] > 5 })
	later := svc.reportAt(t, time.UnixMilli(rep.TimeMs).Add(15*time.Second))
	for key, n := range later.UserRejected {
		if key != noisyID+"/"+heavy && n != 0 {
			t.Errorf("%s: %d requests rejected, want only %s's", key, n, heavy)
		}
	}
	t.Logf("%s/%s: %d requests rejected; no other user of any tenant rejected", noisyID, heavy, later.UserRejected[noisyID+"/"+heavy])
}
