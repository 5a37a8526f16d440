package engine_test

import (
	"testing"
	"time"

	"github.com/tandem-mq/tandem/engine"
)

// TestQueueFigures checks the counters and the oldest message's publish
// time as an operator sees them: through acks, NACKs, dead letters and a
// restart that leaves the backlog on disk.
func TestQueueFigures(t *testing.T) {
	h := newHarness(t, engine.Config{
		Default: engine.Policy{MaxDeliveries: 1},
		Rules:   []engine.PolicyRule{{Match: "retry", Policy: engine.Policy{MaxDeliveries: 5}}},
	})
	for _, body := range []string{"a", "b", "c"} {
		h.send("jobs", body)
		h.clock.Advance(time.Second)
	}
	figure := func(name string) engine.QueueInfo {
		t.Helper()
		info, err := h.b.QueueFigure(name)
		if err != nil {
			t.Fatal(err)
		}
		return info
	}
	if got, want := figure("jobs").Oldest, epoch.UnixNano(); got != want {
		t.Fatalf("oldest = %v, want %v", time.Unix(0, got), time.Unix(0, want))
	}

	c, r := h.consume("jobs", engine.ConsumeOptions{Credit: 2})
	ds := r.take()
	expectBodies(t, "first deliveries", ds, "a", "b")
	if err := c.Ack(true, ds[1].Tag); err != nil {
		t.Fatal(err)
	}
	more := r.take()
	expectBodies(t, "after the ack", more, "c")
	// "a" is unacked and still the oldest.
	if info := figure("jobs"); info.Oldest != epoch.UnixNano() || info.Messages != 2 || info.Unacked != 2 {
		t.Fatalf("after ack: oldest %v, messages %d, unacked %d", time.Unix(0, info.Oldest), info.Messages, info.Unacked)
	}
	if err := c.Nack(ds[0].Tag); err != nil { // max_deliveries 1: dead-lettered
		t.Fatal(err)
	}
	ds = more
	info := figure("jobs")
	if want := epoch.Add(2 * time.Second).UnixNano(); info.Oldest != want {
		t.Fatalf("oldest after the dead letter = %v, want %v", time.Unix(0, info.Oldest), time.Unix(0, want))
	}
	want := engine.QueueStats{Published: 3, Delivered: 3, Acked: 1, DeadLettered: 1}
	if info.Stats != want {
		t.Fatalf("stats = %+v, want %+v", info.Stats, want)
	}
	// The dead letter keeps its first publish time.
	if dlq := figure("jobs.dlq"); dlq.Oldest != epoch.UnixNano() || dlq.Messages != 1 || dlq.Stats.Published != 1 {
		t.Fatalf("dlq: %+v", dlq)
	}
	if err := c.Ack(true, ds[0].Tag); err != nil {
		t.Fatal(err)
	}
	if info := figure("jobs"); info.Oldest != 0 || info.Messages != 0 {
		t.Fatalf("empty queue: oldest %d, messages %d", info.Oldest, info.Messages)
	}

	// A released message comes back: a second delivery, a redelivery.
	h.send("retry", "r")
	rc, rr := h.consume("retry", engine.ConsumeOptions{})
	if err := rc.Release(rr.take()[0].Tag); err != nil {
		t.Fatal(err)
	}
	if err := rc.Ack(true, rr.take()[0].Tag); err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	if st := figure("retry").Stats; st != (engine.QueueStats{Published: 1, Delivered: 2, Redelivered: 1, Acked: 1}) {
		t.Fatalf("retry stats = %+v", st)
	}

	// After a restart the backlog waits on disk: the oldest is read there.
	h.send("backlog", "x")
	h.clock.Advance(time.Second)
	h.send("backlog", "y")
	h.restart()
	figures := h.b.QueueFigures()
	var names []string
	for _, f := range figures {
		names = append(names, f.Name)
		if f.Name == "backlog" && (f.Oldest != epoch.Add(3*time.Second).UnixNano() || f.Messages != 2) {
			t.Fatalf("backlog after restart: oldest %v, messages %d", time.Unix(0, f.Oldest), f.Messages)
		}
	}
	if len(names) != 4 || names[0] != "backlog" || names[1] != "jobs" || names[2] != "jobs.dlq" || names[3] != "retry" {
		t.Fatalf("QueueFigures lists %q", names)
	}
	if _, err := h.b.QueueFigure("nope"); err == nil {
		t.Fatal("QueueFigure of a missing queue: no error")
	}
}

// TestPolicyOverrideAtRunTime sets and clears a queue's own policy while it
// runs: the effective policy changes at once, and the override survives a
// restart.
func TestPolicyOverrideAtRunTime(t *testing.T) {
	h := newHarness(t, engine.Config{Rules: []engine.PolicyRule{{Match: "jobs", Policy: engine.Policy{MaxDeliveries: 3}}}})
	if err := h.b.DeclareQueue("jobs", engine.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	over := engine.Policy{TTL: time.Minute, MaxLength: 2, Overflow: engine.OverflowDropHead}
	if err := h.b.SetPolicy("jobs", over); err != nil {
		t.Fatal(err)
	}
	h.restart()
	info, err := h.b.QueueInfo("jobs")
	if err != nil {
		t.Fatal(err)
	}
	if info.Override != over || info.Policy.TTL != time.Minute || info.Policy.MaxDeliveries != 3 || info.Policy.MaxLength != 2 {
		t.Fatalf("after restart: override %+v, policy %+v", info.Override, info.Policy)
	}
	for _, b := range []string{"a", "b", "c"} {
		h.send("jobs", b)
	}
	if info, _ := h.b.QueueInfo("jobs"); info.Messages != 2 || info.Stats.Dropped != 1 {
		t.Fatalf("max_length 2 with drop-head: %d messages, %d dropped", info.Messages, info.Stats.Dropped)
	}
	if err := h.b.SetPolicy("jobs", engine.Policy{}); err != nil {
		t.Fatal(err)
	}
	h.restart()
	if info, _ := h.b.QueueInfo("jobs"); info.Override != (engine.Policy{}) || info.Policy.TTL != 0 || info.Policy.MaxLength != -1 {
		t.Fatalf("cleared: override %+v, policy %+v", info.Override, info.Policy)
	}
	if err := h.b.SetPolicy("jobs", engine.Policy{MaxLength: -5}); err == nil {
		t.Fatal("an invalid policy was accepted")
	}
}
