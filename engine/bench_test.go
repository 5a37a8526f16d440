package engine_test

import (
	"sync/atomic"
	"testing"

	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/engine/memstore"
)

type countSink struct{ n atomic.Int64 }

func (c *countSink) Deliver(engine.Delivery) { c.n.Add(1) }

// BenchmarkTopicFanOut publishes to a topic that 1,000 wildcard
// subscriptions match. Target: at least 1M deliveries/s.
func BenchmarkTopicFanOut(b *testing.B) {
	br, err := engine.Open(memstore.New(), engine.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	sink := &countSink{}
	for i := range 1000 {
		f := []string{"sensors/+/temp", "sensors/#", "+/room1/+", "#"}[i%4]
		if _, err := br.Subscribe(f, sink); err != nil {
			b.Fatal(err)
		}
	}
	m := &engine.Message{Topic: "sensors/room1/temp", Body: make([]byte, 64)}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := br.Publish(m); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(sink.n.Load())/b.Elapsed().Seconds(), "deliveries/s")
}

// BenchmarkTopicFanOutOverlapping is BenchmarkTopicFanOut with 250
// subscriptions of four overlapping filters each: every publish is
// deduplicated to one delivery per subscription.
func BenchmarkTopicFanOutOverlapping(b *testing.B) {
	br, err := engine.Open(memstore.New(), engine.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	sink := &countSink{}
	for range 250 {
		s := br.SubscribeFilters(sink)
		for _, f := range []string{"sensors/+/temp", "sensors/#", "+/room1/+", "#"} {
			if err := s.AddFilter(f); err != nil {
				b.Fatal(err)
			}
		}
	}
	m := &engine.Message{Topic: "sensors/room1/temp", Body: make([]byte, 64)}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := br.Publish(m); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(sink.n.Load())/b.Elapsed().Seconds(), "deliveries/s")
}
