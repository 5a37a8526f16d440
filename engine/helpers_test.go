package engine_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/engine/memstore"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// harness is a broker on a memstore with a fake clock.
type harness struct {
	t     *testing.T
	store engine.Store
	clock *engine.FakeClock
	cfg   engine.Config
	b     *engine.Broker
}

func newHarness(t *testing.T, cfg engine.Config) *harness {
	t.Helper()
	h := &harness{t: t, store: memstore.New(), clock: engine.NewFakeClock(epoch), cfg: cfg}
	h.open()
	t.Cleanup(func() {
		if err := h.b.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return h
}

func (h *harness) open() {
	h.t.Helper()
	cfg := h.cfg
	cfg.Clock = h.clock
	b, err := engine.Open(h.store, cfg)
	if err != nil {
		h.t.Fatalf("open: %v", err)
	}
	h.b = b
}

// restart closes the broker and opens a new one on the same store, as a
// process restart would.
func (h *harness) restart() {
	h.t.Helper()
	if err := h.b.Close(); err != nil {
		h.t.Fatalf("close: %v", err)
	}
	h.open()
}

func (h *harness) send(queue string, body string, props ...engine.Property) {
	h.t.Helper()
	if err := h.b.Publish(&engine.Message{Topic: queue, ToQueue: true, Body: []byte(body), QoS: 1, Props: props}); err != nil {
		h.t.Fatalf("publish %q to %s: %v", body, queue, err)
	}
}

func (h *harness) consume(queue string, opts engine.ConsumeOptions) (*engine.Consumer, *recorder) {
	h.t.Helper()
	r := &recorder{}
	c, err := h.b.Consume(queue, r, opts)
	if err != nil {
		h.t.Fatalf("consume %s: %v", queue, err)
	}
	return c, r
}

// recorder is a Sink that keeps what it gets.
type recorder struct {
	mu sync.Mutex
	ds []engine.Delivery
}

func (r *recorder) Deliver(d engine.Delivery) {
	r.mu.Lock()
	r.ds = append(r.ds, d)
	r.mu.Unlock()
}

// take returns and forgets what arrived so far.
func (r *recorder) take() []engine.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	ds := r.ds
	r.ds = nil
	return ds
}

func bodies(ds []engine.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = string(d.Msg.Body)
	}
	return out
}

func tags(ds []engine.Delivery) []uint64 {
	out := make([]uint64, len(ds))
	for i, d := range ds {
		out[i] = d.Tag
	}
	return out
}

func expectBodies(t *testing.T, what string, ds []engine.Delivery, want ...string) {
	t.Helper()
	if got := bodies(ds); !slices.Equal(got, want) {
		t.Fatalf("%s: got %q, want %q", what, got, want)
	}
}

func seq(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

func prop(m *engine.Message, key string) string {
	v, _ := m.Prop(key)
	return v
}

func joinBodies(ds []engine.Delivery) string { return strings.Join(bodies(ds), ",") }
