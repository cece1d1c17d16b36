package sim

import (
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/tenantguard/tenantguard/anomaly"
)

func TestTune(t *testing.T) {
	if os.Getenv("SIMTUNE") == "" {
		t.Skip()
	}
	gen := DefaultConfig()
	if s := os.Getenv("SIMSEED"); s != "" {
		v, _ := strconv.Atoi(s)
		gen.Seed = uint64(v)
	}
	for _, h := range []float64{14} {
		cfg := anomaly.DefaultConfig()
		cfg.Significance = h
		rep, _, _ := Evaluate(gen, cfg)
		fmt.Println("== h", h)
		rep.Print(os.Stdout)
		for _, e := range rep.False {
			fmt.Printf("   false %s %s %s r=%.2f obs=%.3g\n", e.TenantID, e.Metric, e.StartsAt, e.Ratio, e.Observed)
		}
	}
}
