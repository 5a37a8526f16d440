package engine

import "slices"

// route is one entry of the topic trie: a topic subscriber or a binding.
// A subscriber has one route, stored under each of its filters.
type route struct {
	sub   *TopicSub
	queue *Queue
	// multi is set while sub has more than one filter, so that routing
	// checks it for duplicates (guarded by Broker.mu).
	multi bool
}

// TopicSub is a non-durable topic subscription: every message published
// while it exists to a topic one of its filters matches is handed to its
// sink once, however many of its filters match, in memory only.
type TopicSub struct {
	b    *Broker
	id   uint64 // hashed by routing to deduplicate (subSet)
	sink Sink
	r    *route
	// guarded by b.mu
	filters []string
	closed  bool
}

// Subscribe adds a non-durable topic subscription to filter: it is
// SubscribeFilters followed by AddFilter.
func (b *Broker) Subscribe(filter string, sink Sink) (*TopicSub, error) {
	s := b.SubscribeFilters(sink)
	if err := s.AddFilter(filter); err != nil {
		return nil, err
	}
	return s, nil
}

// SubscribeFilters creates a non-durable topic subscription with no filters
// yet: it receives nothing until AddFilter. A message matched by several of
// its filters is delivered to sink once (MQTT overlapping subscriptions
// [MQTT-3.3.4-2]).
func (b *Broker) SubscribeFilters(sink Sink) *TopicSub {
	s := &TopicSub{b: b, id: b.subIDs.Add(1), sink: sink}
	s.r = &route{sub: s}
	return s
}

// AddFilter adds filter to the subscription; adding one it has already
// is a no-op. Messages published after AddFilter returns are matched
// against it.
func (s *TopicSub) AddFilter(filter string) error {
	if err := ValidateFilter(filter); err != nil {
		return err
	}
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if s.closed {
		return ErrSubClosed
	}
	if slices.Contains(s.filters, filter) {
		return nil
	}
	b.routes.add(filter, s.r)
	s.filters = append(s.filters, filter)
	s.r.multi = len(s.filters) > 1
	return nil
}

// RemoveFilter removes filter from the subscription, if it has it.
func (s *TopicSub) RemoveFilter(filter string) {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	i := slices.Index(s.filters, filter)
	if i < 0 {
		return
	}
	b.routes.remove(filter, s.r)
	s.filters = slices.Delete(s.filters, i, i+1)
	s.r.multi = len(s.filters) > 1
}

// Filters returns the subscription's filters, sorted.
func (s *TopicSub) Filters() []string {
	s.b.mu.RLock()
	out := slices.Clone(s.filters)
	s.b.mu.RUnlock()
	slices.Sort(out)
	return out
}

// Close ends the subscription, removing every filter. AddFilter fails
// afterwards with ErrSubClosed.
func (s *TopicSub) Close() {
	b := s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range s.filters {
		b.routes.remove(f, s.r)
	}
	s.filters = nil
	s.r.multi = false
	s.closed = true
}
