package sim

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/anomaly"
)

func TestDebugDump(t *testing.T) {
	if os.Getenv("SIMDEBUG") == "" {
		t.Skip()
	}
	gen := DefaultConfig()
	gen.Tenants, gen.Days = 80, 14
	gen.fill()
	rp, _ := anomaly.NewReplayer(anomaly.DefaultConfig())
	tr := Generate(gen, func(r *anomaly.Rollup) { rp.Rollup(r) })
	eps := rp.Finish(30 * time.Minute)
	inj := map[string][]Injection{}
	for _, in := range tr.Injections {
		inj[in.Tenant] = append(inj[in.Tenant], in)
	}
	for _, e := range eps {
		end := "-"
		if e.EndsAt != nil {
			end = e.EndsAt.Format("01-02 15:04")
		}
		fmt.Printf("%s %-11s %s..%s det %s obs %.3g base %.3g r %.2f rate %.0f\n", e.TenantID, e.Metric, e.StartsAt.Format("Mon 01-02 15:04"), end, e.DetectedAt.Format("15:04"), e.Observed, e.Baseline, e.Ratio, tenantByID(tr, e.TenantID).Rate)
	}
	for _, in := range tr.Injections {
		fmt.Printf("INJ %s %s %s..%s\n", in.Tenant, in.Type, in.Start.Format("Mon 01-02 15:04"), in.End.Format("01-02 15:04"))
	}
}
