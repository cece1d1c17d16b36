package anomaly

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/tenantguard/tenantguard/collector/event"
)

// spendState tracks a tenant's spend in the current billing period (a UTC
// calendar month) and which cap thresholds have alerted in it.
type spendState struct {
	spend      float64
	from, to   uint32 // current period, Unix seconds [from, to)
	activeFrom uint32 // period of the firing threshold alert
	activeAt   uint32 // its starts_at
	fired      uint8  // bit i: threshold i alerted (or was superseded) this period
	active     int8   // 1 + index of the firing threshold alert, 0 when none
}

// monthBounds returns the UTC calendar month holding sec.
func monthBounds(sec int64) (int64, int64) {
	t := time.Unix(sec, 0).UTC()
	from := time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	return from.Unix(), from.AddDate(0, 1, 0).Unix()
}

// add books cost at sec. Cost of an earlier, finished period is ignored.
func (s *spendState) add(sec int64, cost float64) {
	if sec >= int64(s.from) && sec < int64(s.to) {
		s.spend += cost
		return
	}
	if sec < int64(s.from) || sec < 0 || sec >= 1<<32-32*86400 {
		return
	}
	from, to := monthBounds(sec)
	s.from, s.to = uint32(from), uint32(to)
	s.spend, s.fired = cost, 0
}

// correct books a correction's cost delta at sec, the corrected event's
// time: only inside the current period, and never below zero. A period
// that is over is not reopened.
func (s *spendState) correct(sec int64, cost float64) {
	if sec >= int64(s.from) && sec < int64(s.to) {
		s.spend = max(0, s.spend+cost)
	}
}

// ObserveCorrection nets an applied correction (a void, or an amendment
// that changed the cost) out of the tenant's spend in the current month,
// so spend-cap thresholds count what will be billed. An alert already
// fired this month stays as it is. A tenant without spend state is left
// alone: warm start reads spend from usage_1m, which already nets
// corrections out. It is the correction service's observer hook.
func (d *Detector) ObserveCorrection(e *event.CorrectionEffect) {
	if e == nil || e.Cost == 0 || math.IsNaN(e.Cost) || math.IsInf(e.Cost, 0) {
		return
	}
	sh := d.shard(e.TenantID)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if t := sh.tenants[e.TenantID]; t != nil {
		t.sp.correct(e.Time.Unix(), e.Cost)
	}
}

// SpendFingerprint is the fingerprint of the spend_cap alert of tenant's
// threshold (its label, "90" for 0.9) in the billing period starting at
// period: the same on every replica and after any restart, so the
// anomalies table tells which thresholds were alerted in a period.
func SpendFingerprint(tenant, threshold string, period time.Time) string {
	return Fingerprint(tenant, MetricSpendCap, "", threshold, period)
}

// thresholdLabel formats 0.9 as "90".
func thresholdLabel(f float64) string { return strconv.FormatFloat(f*100, 'f', -1, 64) }

// checkSpend alerts once per threshold and period. Crossing several
// thresholds at once alerts only the highest; a higher threshold resolves
// (supersedes) the lower one still firing; a new period resolves the last.
func (d *Detector) checkSpend(t *tenant, now int64, out *[]Alert) {
	capv := t.pp.spendCap
	s := &t.sp
	if capv <= 0 {
		return
	}
	th := d.cfg.SpendThresholds
	if s.active != 0 && (s.activeFrom != s.from || now >= int64(s.to)) {
		end := int64(s.to)
		if s.activeFrom != s.from {
			end = int64(s.from)
		}
		*out = append(*out, d.spendAlert(t, int(s.active-1), int64(s.activeFrom), int64(s.activeAt), end, s.spend))
		s.active = 0
	}
	if now >= int64(s.to) || now < int64(s.from) {
		return
	}
	hi := -1
	for i, f := range th {
		if s.spend >= f*capv {
			hi = i
		}
	}
	if hi < 0 || s.fired&(1<<hi) != 0 {
		return
	}
	if s.active != 0 {
		*out = append(*out, d.spendAlert(t, int(s.active-1), int64(s.activeFrom), int64(s.activeAt), now, s.spend))
	}
	s.fired |= 1<<(hi+1) - 1
	s.active, s.activeFrom, s.activeAt = int8(hi+1), s.from, uint32(now)
	*out = append(*out, d.spendAlert(t, hi, int64(s.from), now, 0, s.spend))
}

// spendAlert builds a spend_cap alert for threshold index i of the period
// starting at period; endsAt 0 means firing.
func (d *Detector) spendAlert(t *tenant, i int, period, startsAt, endsAt int64, spend float64) Alert {
	th := d.cfg.SpendThresholds
	capv := t.pp.spendCap
	label := thresholdLabel(th[i])
	sev := SeverityInfo
	switch {
	case i == len(th)-1:
		sev = SeverityCritical
	case i == len(th)-2:
		sev = SeverityWarning
	}
	a := Alert{
		TenantID: t.id,
		Metric:   MetricSpendCap,
		Status:   StatusFiring,
		Severity: sev,
		Observed: spend,
		Baseline: capv,
		Ratio:    spend / capv,
		StartsAt: time.Unix(startsAt, 0).UTC(),
		Labels:   map[string]string{"threshold": label, "plan": t.pp.name},
	}
	a.Fingerprint = SpendFingerprint(t.id, label, time.Unix(period, 0))
	if i == len(th)-1 {
		a.Labels["action"] = "degrade"
		a.Summary = fmt.Sprintf("tenant %s reached %s%% of its monthly spend cap (%.2f of %.2f): degrade gracefully", t.id, label, spend, capv)
	} else {
		a.Summary = fmt.Sprintf("tenant %s reached %s%% of its monthly spend cap (%.2f of %.2f)", t.id, label, spend, capv)
	}
	if endsAt != 0 {
		a.Status = StatusResolved
		a.EndsAt = time.Unix(endsAt, 0).UTC()
	}
	return a
}

// SetSpend seeds a tenant's spend in the billing month holding at, and the
// thresholds already alerted in it (alertedUpTo, a fraction of the cap,
// from the anomalies history), so a restart neither forgets spend nor
// repeats an alert. Warm start calls it with at = now.
func (d *Detector) SetSpend(tenant string, at time.Time, spend float64, alertedUpTo float64) {
	if !finiteNonNeg(spend) {
		d.log.Warn("spend is not a finite amount; ignored", "tenant", tenant, "spend", spend)
		return
	}
	sec := at.Unix()
	sh := d.shard(tenant)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := d.tenantLocked(sh, tenant, int32(floorDiv64(sec, 60)))
	from, to := monthBounds(sec)
	s := &t.sp
	if int64(s.from) != from {
		s.from, s.to, s.fired, s.spend = uint32(from), uint32(to), 0, 0
	}
	s.spend = spend
	for i, f := range d.cfg.SpendThresholds {
		if alertedUpTo >= f {
			s.fired |= 1 << i
		}
	}
}
