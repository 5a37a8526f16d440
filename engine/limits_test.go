package engine_test

import (
	"errors"
	"testing"

	"github.com/tandem-mq/tandem/engine"
)

// Config.MaxQueues bounds the queues of every kind: past it, declaring a
// queue, publishing to a new one or a durable subscription fails with
// ErrTooManyQueues (and is counted); deleting a queue makes room. Queues
// recovered at startup are never refused.
func TestMaxQueues(t *testing.T) {
	h := newHarness(t, engine.Config{MaxQueues: 2})
	b := h.b
	for _, q := range []string{"a", "b"} {
		if err := b.DeclareQueue(q, engine.QueueOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.DeclareQueue("a", engine.QueueOptions{}); err != nil {
		t.Fatalf("declaring an existing queue at the limit: %v", err)
	}
	for what, err := range map[string]error{
		"declare":              b.DeclareQueue("c", engine.QueueOptions{}),
		"publish to new queue": b.Publish(&engine.Message{Topic: "c", ToQueue: true, Body: []byte("x")}),
		"durable subscription": b.DurableSubscription("d", "t/#", engine.QueueOptions{}),
	} {
		if !errors.Is(err, engine.ErrTooManyQueues) {
			t.Errorf("%s: %v, want ErrTooManyQueues", what, err)
		}
	}
	if n := b.QueuesRefused(); n != 3 {
		t.Errorf("QueuesRefused() = %d, want 3", n)
	}
	if err := b.DeleteQueue("a"); err != nil {
		t.Fatal(err)
	}
	if err := b.DeclareQueue("c", engine.QueueOptions{}); err != nil {
		t.Fatalf("after a deletion: %v", err)
	}
}
