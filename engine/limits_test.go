package engine_test

import (
	"errors"
	"fmt"
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

// While the disk alarm is on, every publish is refused with ErrDiskFull
// (alone or in a batch, where the others are refused too), and counted;
// consuming and acking go on; once it is off, publishing works again.
func TestDiskAlarm(t *testing.T) {
	h := newHarness(t, engine.Config{})
	b := h.b
	h.send("q", "before")
	c, rec := h.consume("q", engine.ConsumeOptions{})
	b.SetDiskAlarm(fmt.Errorf("%w: 10 MB free, limit 1 GB", engine.ErrDiskFull))
	if err := b.Publish(&engine.Message{Topic: "q", ToQueue: true, Body: []byte("x")}); !errors.Is(err, engine.ErrDiskFull) {
		t.Fatalf("publish under the alarm: %v", err)
	}
	tx := b.BeginBatch()
	_ = tx.Publish(&engine.Message{Topic: "t", Body: []byte("y")})
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(tx.PublishErr(0), engine.ErrDiskFull) {
		t.Fatalf("batch publish under the alarm: %v", tx.PublishErr(0))
	}
	if n := b.DiskRefused(); n != 2 {
		t.Errorf("DiskRefused() = %d, want 2", n)
	}
	ds := rec.take()
	if len(ds) != 1 {
		t.Fatalf("got %d deliveries", len(ds))
	}
	if err := c.Ack(true, ds[0].Tag); err != nil {
		t.Fatalf("ack under the alarm: %v", err)
	}
	b.SetDiskAlarm(nil)
	if err := b.Publish(&engine.Message{Topic: "q", ToQueue: true, Body: []byte("after")}); err != nil {
		t.Fatalf("publish after the alarm: %v", err)
	}
}
