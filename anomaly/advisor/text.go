package advisor

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// WriteText writes r as the table of `tenantguard advise`: one line per
// tenant with a recommendation, the resource behind it and its figures,
// then a summary line.
func WriteText(w io.Writer, r Report) error {
	bw := &errWriter{w: w}
	fmt.Fprintf(bw, "heavy-tenant advice for %s .. %s (%d hours): over %s of a pooled resource in at least %s of the hours: move to dedicated; in at least %s: watch\n\n",
		r.From.Format(time.RFC3339), r.To.Format(time.RFC3339), r.Hours, pct(r.Thresholds.Share), pct(r.Thresholds.Sustained), pct(r.Thresholds.Watch))
	tw := tabwriter.NewWriter(bw, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tRECOMMENDATION\tRESOURCE\tSHARE\tRECENT\tTREND\tHOURS OVER\tMAX HOUR")
	for _, t := range r.Tenants {
		if t.Recommendation == None {
			continue
		}
		for _, u := range t.Resources {
			if u.Resource != t.Resource {
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d/%d (%s)\t%s\n", t.TenantID, label(t.Recommendation), u.Resource,
				pct(u.Share), pct(u.RecentShare), u.Trend, u.HoursOver, r.Hours, pct(u.HoursOverFraction), pct(u.MaxHourShare))
		}
	}
	_ = tw.Flush()
	fmt.Fprintf(bw, "\n%d tenants: %d to move to dedicated, %d to watch (RECENT is %s .. %s)\n",
		len(r.Tenants), r.Heavy, r.Watched, r.TrendFrom.Format(time.RFC3339), r.To.Format(time.RFC3339))
	return bw.err
}

func label(rec string) string {
	if rec == MoveToDedicated {
		return "move to dedicated"
	}
	return rec
}

// errWriter keeps the first write error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
