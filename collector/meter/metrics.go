package meter

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Why a record did not become an event.
const (
	dropQueueFull   = iota // the meter's queue was full
	dropClosed             // the meter was closed
	dropEmitFull           // the emitter's buffer was full (drop policy)
	dropEmitInvalid        // the emitter refused the event as invalid
	dropEmitClosed         // the emitter was closed, or Close's deadline passed
	nDrops
)

var dropReasons = [nDrops]string{"queue_full", "closed", "emitter_full", "invalid", "emitter_closed"}

// Why a request was denied, as counted in tenantguard_meter_denied_total.
const (
	denyUnauthorized = iota
	denyThrottled
	denyShed
	denyCircuitOpen
	nDenials
)

var denyReasons = [nDenials]string{"unauthorized", "throttled", "shed", "circuit_open"}

func denyIndex(reason string) int {
	for i, r := range denyReasons {
		if r == reason {
			return i
		}
	}
	return denyThrottled
}

// stats are the meter's counters: plain atomics on the hot path, read at
// scrape time.
type stats struct {
	emitted atomic.Uint64
	dropped [nDrops]atomic.Uint64
	denied  [nDenials]atomic.Uint64
	panics  atomic.Uint64

	untenantedBy sync.Map // kind -> *atomic.Uint64; bounded by the kinds in code

	mu       sync.Mutex // guards the log throttle
	lastLog  time.Time
	unlogged uint64
}

func (s *stats) untenanted(kind string) *atomic.Uint64 {
	if c, ok := s.untenantedBy.Load(kind); ok {
		return c.(*atomic.Uint64)
	}
	c, _ := s.untenantedBy.LoadOrStore(kind, new(atomic.Uint64))
	return c.(*atomic.Uint64)
}

// logDrop logs a failed hand-over at most once a minute, with the count
// since the last line.
func (s *stats) logDrop(log *slog.Logger, reason int, tenant string, err error) {
	s.mu.Lock()
	s.unlogged++
	if time.Since(s.lastLog) < time.Minute {
		s.mu.Unlock()
		return
	}
	n := s.unlogged
	s.unlogged, s.lastLog = 0, time.Now()
	s.mu.Unlock()
	log.Warn("records not emitted", "reason", dropReasons[reason], "tenant", tenant, "count", n, "err", err)
}

// collector exposes the meter's metrics:
//
//	tenantguard_meter_queued                  records waiting for the emitter
//	tenantguard_meter_emitted_total           records handed to the emitter
//	tenantguard_meter_dropped_total{reason}   records that did not become events
//	tenantguard_meter_denied_total{reason}    requests the guard turned away
//	tenantguard_meter_panics_total            handler panics, metered as errors
//	tenantguard_meter_untenanted_total{kind}  calls and queries with no tenant in their context
type collector struct {
	m                                                    *Meter
	queued, emitted, dropped, denied, panics, untenanted *prometheus.Desc
}

func newCollector(m *Meter) *collector {
	return &collector{
		m:       m,
		queued:  prometheus.NewDesc("tenantguard_meter_queued", "Records waiting to be handed to the emitter.", nil, nil),
		emitted: prometheus.NewDesc("tenantguard_meter_emitted_total", "Records handed to the emitter.", nil, nil),
		dropped: prometheus.NewDesc("tenantguard_meter_dropped_total",
			"Records that did not become events, by reason: queue_full, closed, emitter_full, invalid, emitter_closed.", []string{"reason"}, nil),
		denied: prometheus.NewDesc("tenantguard_meter_denied_total",
			"Requests the guard turned away, by reason: unauthorized, throttled, shed, circuit_open.", []string{"reason"}, nil),
		panics: prometheus.NewDesc("tenantguard_meter_panics_total", "Handler panics, metered as errors and left to propagate.", nil, nil),
		untenanted: prometheus.NewDesc("tenantguard_meter_untenanted_total",
			"Outbound calls and queries whose context named no tenant, so were not metered, by kind.", []string{"kind"}, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.queued, c.emitted, c.dropped, c.denied, c.panics, c.untenanted} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := &c.m.stats
	ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(len(c.m.q)))
	ch <- prometheus.MustNewConstMetric(c.emitted, prometheus.CounterValue, float64(s.emitted.Load()))
	for i := range s.dropped {
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(s.dropped[i].Load()), dropReasons[i])
	}
	for i := range s.denied {
		ch <- prometheus.MustNewConstMetric(c.denied, prometheus.CounterValue, float64(s.denied[i].Load()), denyReasons[i])
	}
	ch <- prometheus.MustNewConstMetric(c.panics, prometheus.CounterValue, float64(s.panics.Load()))
	s.untenantedBy.Range(func(kind, n any) bool {
		ch <- prometheus.MustNewConstMetric(c.untenanted, prometheus.CounterValue, float64(n.(*atomic.Uint64).Load()), kind.(string))
		return true
	})
}

// Dropped returns how many records did not become events, for any reason.
func (m *Meter) Dropped() uint64 {
	var n uint64
	for i := range m.stats.dropped {
		n += m.stats.dropped[i].Load()
	}
	return n
}

// Emitted returns how many records were handed to the emitter.
func (m *Meter) Emitted() uint64 { return m.stats.emitted.Load() }
