package emit

import "github.com/prometheus/client_golang/prometheus"

// Register puts the emitter's own metrics on reg, read from Stats at
// scrape time (Emit pays nothing for them):
//
//	tenantguard_emitter_buffered         events accepted and not yet confirmed (buffer depth)
//	tenantguard_emitter_buffer_size      the buffer's capacity (Config.BufferSize)
//	tenantguard_emitter_accepted_total   events taken into the buffer
//	tenantguard_emitter_published_total  events JetStream confirmed
//	tenantguard_emitter_dropped_total    events refused because the buffer was full
//	tenantguard_emitter_invalid_total    events refused by validation
//	tenantguard_emitter_retries_total    publish attempts that failed and were retried
//	tenantguard_emitter_fast_batch       1 while publishing through fast batches, 0 for async publish
//	tenantguard_emitter_tenant_buffered{tenant}  events a tenant holds in the buffer, for the
//	                                     Config.TenantSeries tenants holding most; the rest
//	                                     summed under tenant="__overflow__"
//	tenantguard_emitter_tenant_buffer_size  the share one tenant may hold (Config.TenantBuffer,
//	                                     or BufferSize when unbounded)
//	tenantguard_emitter_tenant_deferrals_total  times a tenant's next event waited for Config.TenantRate
//	tenantguard_emitter_tenant_full_total  Emit calls that found their tenant's share full
//
// One emitter per registry; wrap reg with prometheus.WrapRegistererWith to
// register a second one under a label.
func (e *Emitter) Register(reg prometheus.Registerer) error {
	return reg.Register(newCollector(e))
}

type collector struct {
	e                                              *Emitter
	buffered, size, fast                           *prometheus.Desc
	accepted, published, dropped, invalid, retries *prometheus.Desc
	tenantBuffered, tenantSize, deferrals, full    *prometheus.Desc
}

// overflowTenant labels the sum over tenants outside the top series.
const overflowTenant = "__overflow__"

func newCollector(e *Emitter) *collector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("tenantguard_emitter_"+name, help, nil, nil)
	}
	return &collector{
		e:         e,
		buffered:  d("buffered", "Events accepted and not yet confirmed by JetStream (the buffer's depth)."),
		size:      d("buffer_size", "Capacity of the emitter's buffer, in events."),
		accepted:  d("accepted_total", "Events taken into the buffer."),
		published: d("published_total", "Events JetStream confirmed."),
		dropped:   d("dropped_total", "Events refused because the buffer was full (drop policy, or block policy past the caller's context)."),
		invalid:   d("invalid_total", "Events refused by validation before buffering."),
		retries:   d("retries_total", "Publish attempts that failed and were retried."),
		fast:      d("fast_batch", "1 while the emitter publishes through JetStream fast batches, 0 while it uses async publish."),
		tenantBuffered: prometheus.NewDesc("tenantguard_emitter_tenant_buffered",
			"Events a tenant holds in the emitter's buffer, for the tenants holding most; the rest summed under tenant=\"__overflow__\".",
			[]string{"tenant"}, nil),
		tenantSize: d("tenant_buffer_size", "Events one tenant may hold in the emitter's buffer (its share)."),
		deferrals:  d("tenant_deferrals_total", "Times a tenant's next event waited for the per-tenant rate."),
		full:       d("tenant_full_total", "Emit calls that found their tenant's share of the buffer full, and waited or dropped."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.buffered, c.size, c.accepted, c.published, c.dropped, c.invalid, c.retries, c.fast,
		c.tenantBuffered, c.tenantSize, c.deferrals, c.full} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.e.Stats()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(c.buffered, float64(s.Buffered))
	gauge(c.size, float64(c.e.cfg.BufferSize))
	counter(c.accepted, s.Accepted)
	counter(c.published, s.Published)
	counter(c.dropped, s.Dropped)
	counter(c.invalid, s.Invalid)
	counter(c.retries, s.Retries)
	fast := 0.0
	if s.FastBatch {
		fast = 1
	}
	gauge(c.fast, fast)
	share := c.e.cfg.BufferSize
	if s := c.e.fair.share; s > 0 {
		share = s
	}
	gauge(c.tenantSize, float64(share))
	counter(c.deferrals, s.TenantDeferrals)
	counter(c.full, s.TenantFull)
	top, rest := c.e.fair.top(c.e.cfg.TenantSeries)
	for _, t := range top {
		ch <- prometheus.MustNewConstMetric(c.tenantBuffered, prometheus.GaugeValue, float64(t.Buffered), t.Tenant)
	}
	ch <- prometheus.MustNewConstMetric(c.tenantBuffered, prometheus.GaugeValue, float64(rest), overflowTenant)
}
