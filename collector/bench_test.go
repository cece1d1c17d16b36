package collector

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/pricing"
)

// benchMsg is a delivered message for the pure per-event path (decode,
// validate, price, batch); no server is involved in what it measures.
type benchMsg struct {
	jetstream.Msg
	subject string
	data    []byte
}

func (m *benchMsg) Data() []byte         { return m.data }
func (m *benchMsg) Subject() string      { return m.subject }
func (m *benchMsg) Headers() nats.Header { return nil }
func (m *benchMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{NumDelivered: 1}, nil
}

// BenchmarkPerEvent measures the collector's per-event CPU cost before the
// insert: decode, validate, price and append to the batch.
func BenchmarkPerEvent(b *testing.B) {
	pc := pricing.DefaultConfig()
	pc.Prices = map[string]string{"api_request": "0.0001"}
	book, _ := pricing.New(pc, nil)
	m, _ := newMetrics(prometheus.NewRegistry())
	v, _ := event.NewValidator(event.Rules{})
	c := &Collector{cfg: DefaultConfig(), pricer: book, validator: v, m: m}
	msgs := make([]*benchMsg, 1000)
	now := time.Now()
	for i := range msgs {
		e := event.Event{ID: "01JDX3" + strconv.Itoa(i), TenantID: "t" + strconv.Itoa(i%100), Kind: "api_request", Time: now,
			Quantity: 1, Service: "invoices-api", Route: "GET /v1/invoices", UserID: "u_42", LatencyMs: 12.5, StatusCode: 200}
		msgs[i] = &benchMsg{subject: event.Subject(e.TenantID, e.Kind), data: event.AppendJSON(nil, &e)}
	}
	bt := newBatch(len(msgs))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%len(msgs) == 0 {
			bt.reset()
		}
		c.add(bt, msgs[i%len(msgs)], 0)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
