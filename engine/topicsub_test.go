package engine_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/tandem-mq/tandem/engine"
)

// TestTopicSubOverlappingFiltersDeliverOnce checks a subscription with
// several filters: a message that several of them match is delivered once
// [MQTT-3.3.4-2], and filters come and go without touching the others.
func TestTopicSubOverlappingFiltersDeliverOnce(t *testing.T) {
	h := newHarness(t, engine.Config{})
	r := &recorder{}
	s := h.b.SubscribeFilters(r)
	h.publishTopic("a/b", "none yet", 0)
	for _, f := range []string{"a/+", "#", "a/b", "a/#", "a/+"} { // the last one again: a no-op
		if err := s.AddFilter(f); err != nil {
			t.Fatalf("AddFilter(%q): %v", f, err)
		}
	}
	if err := s.AddFilter("a/#/b"); !errors.Is(err, engine.ErrInvalidFilter) {
		t.Fatalf("AddFilter of an invalid filter = %v", err)
	}
	if got, want := s.Filters(), []string{"#", "a/#", "a/+", "a/b"}; !slices.Equal(got, want) {
		t.Fatalf("Filters() = %q, want %q", got, want)
	}
	// Another subscription on one of the filters gets its own copy.
	other := &recorder{}
	if _, err := h.b.Subscribe("a/b", other); err != nil {
		t.Fatal(err)
	}
	h.publishTopic("a/b", "1", 0) // matched by all four filters
	h.publishTopic("a", "2", 0)   // "#" and "a/#"
	h.publishTopic("x", "3", 0)   // "#" only
	expectBodies(t, "multi-filter sub", r.take(), "1", "2", "3")
	expectBodies(t, "other sub", other.take(), "1")

	s.RemoveFilter("#")
	s.RemoveFilter("never/added")
	h.publishTopic("x", "4", 0)
	h.publishTopic("a/b", "5", 0)
	s.RemoveFilter("a/+")
	s.RemoveFilter("a/#")
	h.publishTopic("a/b", "6", 0) // one filter left
	h.publishTopic("a/c", "7", 0)
	expectBodies(t, "after RemoveFilter", r.take(), "5", "6")
	if got := s.Filters(); !slices.Equal(got, []string{"a/b"}) {
		t.Fatalf("Filters() = %q", got)
	}

	s.Close()
	h.publishTopic("a/b", "8", 0)
	expectBodies(t, "after Close", r.take())
	if err := s.AddFilter("a/b"); !errors.Is(err, engine.ErrSubClosed) {
		t.Fatalf("AddFilter after Close = %v", err)
	}
	if got := s.Filters(); len(got) != 0 {
		t.Fatalf("Filters() after Close = %q", got)
	}
	s.Close() // twice is fine
	expectBodies(t, "other sub", other.take(), "5", "6", "8")
}

// TestTopicSubDedupAmongManyAndQueues routes one message to many
// multi-filter subscriptions, single-filter ones and a queue bound twice:
// each gets exactly one copy.
func TestTopicSubDedupAmongManyAndQueues(t *testing.T) {
	h := newHarness(t, engine.Config{})
	filters := []string{"s/+/t", "s/#", "+/r/+", "#", "s/r/t"}
	var multi, single []*recorder
	for i := range 40 {
		r := &recorder{}
		s := h.b.SubscribeFilters(r)
		// Each subscription gets a different subset, at least two of which match.
		for j, f := range filters {
			if j < 2 || (i>>j)&1 == 1 {
				if err := s.AddFilter(f); err != nil {
					t.Fatal(err)
				}
			}
		}
		multi = append(multi, r)
		r1 := &recorder{}
		if _, err := h.b.Subscribe(filters[i%len(filters)], r1); err != nil {
			t.Fatal(err)
		}
		single = append(single, r1)
	}
	for _, f := range filters[:3] {
		if err := h.b.Bind(f, "q"); err == nil {
			continue
		} else if !errors.Is(err, engine.ErrNoQueue) {
			t.Fatal(err)
		}
		if err := h.b.DeclareQueue("q", engine.QueueOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := h.b.Bind(f, "q"); err != nil {
			t.Fatal(err)
		}
	}
	h.publishTopic("s/r/t", "m", 0)
	for i, r := range multi {
		expectBodies(t, fmt.Sprintf("multi-filter sub %d", i), r.take(), "m")
	}
	for i, r := range single {
		expectBodies(t, fmt.Sprintf("single-filter sub %d", i), r.take(), "m")
	}
	_, rq := h.consume("q", engine.ConsumeOptions{})
	expectBodies(t, "queue bound by three matching filters", rq.take(), "m")
}

// idSink counts deliveries per message ID.
type idSink struct {
	mu   sync.Mutex
	seen map[uint64]int
}

func (s *idSink) Deliver(d engine.Delivery) {
	s.mu.Lock()
	s.seen[d.Msg.ID]++
	s.mu.Unlock()
}

// TestTopicSubConcurrentFilterChanges publishes from several goroutines
// while the filters of the subscriptions change, and checks that no
// subscription ever gets a message twice, and that once the changes stop
// every message reaches every subscription.
func TestTopicSubConcurrentFilterChanges(t *testing.T) {
	h := newHarness(t, engine.Config{})
	const subs, publishers, perPublisher = 4, 4, 300
	sinks := make([]*idSink, subs)
	ts := make([]*engine.TopicSub, subs)
	for i := range sinks {
		sinks[i] = &idSink{seen: map[uint64]int{}}
		ts[i] = h.b.SubscribeFilters(sinks[i])
		if err := ts[i].AddFilter("t/#"); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i, s := range ts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fs := []string{"t/+", "#", "+/x"}
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				f := fs[(n+i)%len(fs)]
				if n%2 == 0 {
					if err := s.AddFilter(f); err != nil {
						t.Error(err)
						return
					}
				} else {
					s.RemoveFilter(f)
				}
			}
		}()
	}
	var pwg sync.WaitGroup
	for range publishers {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for range perPublisher {
				if err := h.b.Publish(&engine.Message{Topic: "t/x", Body: []byte("b")}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	pwg.Wait()
	close(stop)
	wg.Wait()
	for i, s := range sinks {
		s.mu.Lock()
		if len(s.seen) != publishers*perPublisher {
			t.Errorf("sub %d got %d distinct messages, want %d", i, len(s.seen), publishers*perPublisher)
		}
		for id, n := range s.seen {
			if n != 1 {
				t.Errorf("sub %d got message %d %d times", i, id, n)
			}
		}
		s.mu.Unlock()
	}
}

// TestTopicSubRoutingAllocations checks that deduplicating multi-filter
// subscriptions costs no allocation per publish.
func TestTopicSubRoutingAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under -race")
	}
	h := newHarness(t, engine.Config{})
	sink := &countSink{}
	m := &engine.Message{Topic: "a/b/c", Body: []byte("x")}
	publish := func() {
		if err := h.b.Publish(m); err != nil {
			t.Fatal(err)
		}
	}
	for range 100 {
		if _, err := h.b.Subscribe("a/+/c", sink); err != nil {
			t.Fatal(err)
		}
	}
	single := testing.AllocsPerRun(200, publish)
	for range 100 {
		s := h.b.SubscribeFilters(sink)
		for _, f := range []string{"a/#", "#", "a/b/c", "+/b/+"} {
			if err := s.AddFilter(f); err != nil {
				t.Fatal(err)
			}
		}
	}
	multi := testing.AllocsPerRun(200, publish)
	if multi > single {
		t.Fatalf("publish allocates %v times with multi-filter subscriptions, %v without", multi, single)
	}
	if got, want := sink.n.Load(), int64(201*100+201*200); got != want {
		t.Fatalf("%d deliveries, want %d", got, want)
	}
}
