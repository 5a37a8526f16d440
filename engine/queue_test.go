package engine_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tandem-mq/tandem/engine"
)

func TestCompetingConsumersShareByCredit(t *testing.T) {
	h := newHarness(t, engine.Config{})
	c1, r1 := h.consume("jobs", engine.ConsumeOptions{Credit: 2})
	_, r2 := h.consume("jobs", engine.ConsumeOptions{Credit: 2})
	for _, b := range seq("m", 6) {
		h.send("jobs", b)
	}
	d1, d2 := r1.take(), r2.take()
	if len(d1) != 2 || len(d2) != 2 {
		t.Fatalf("with credit 2 each, got %d and %d deliveries", len(d1), len(d2))
	}
	all := append(bodies(d1), bodies(d2)...)
	slices.Sort(all)
	if !slices.Equal(all, []string{"m0", "m1", "m2", "m3"}) {
		t.Fatalf("first four deliveries %q", all)
	}
	if err := c1.Ack(false, tags(d1)...); err != nil {
		t.Fatal(err)
	}
	expectBodies(t, "after c1 acks two", r1.take(), "m4", "m5")
	info, _ := h.b.QueueInfo("jobs")
	if info.Messages != 4 || info.Unacked != 4 {
		t.Fatalf("queue info %+v, want 4 messages 4 unacked", info)
	}
}

func TestFIFOAcrossWindowRefills(t *testing.T) {
	h := newHarness(t, engine.Config{WindowSize: 4})
	want := seq("m", 50)
	for _, b := range want {
		h.send("q", b)
	}
	c, r := h.consume("q", engine.ConsumeOptions{Credit: 3})
	var got []string
	for range 100 {
		ds := r.take()
		if len(ds) == 0 {
			break
		}
		got = append(got, bodies(ds)...)
		if err := c.Ack(false, tags(ds)...); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func TestAckUnknownTag(t *testing.T) {
	h := newHarness(t, engine.Config{})
	c, _ := h.consume("q", engine.ConsumeOptions{})
	if err := c.Ack(false, 12345); !errors.Is(err, engine.ErrUnknownTag) {
		t.Fatalf("ack of unknown tag: %v", err)
	}
	if err := c.Nack(12345); !errors.Is(err, engine.ErrUnknownTag) {
		t.Fatalf("nack of unknown tag: %v", err)
	}
}

func TestNackBacksOffThenDeadLetters(t *testing.T) {
	h := newHarness(t, engine.Config{Default: engine.Policy{
		MaxDeliveries: 3, RedeliveryDelay: time.Second, RedeliveryMultiplier: 2, RedeliveryMaxDelay: 3 * time.Second,
	}})
	h.send("jobs", "poison", engine.Property{Key: "k", Value: "v"})
	c, r := h.consume("jobs", engine.ConsumeOptions{})
	waits := []time.Duration{time.Second, 2 * time.Second}
	for attempt := 1; attempt <= 3; attempt++ {
		ds := r.take()
		if len(ds) != 1 || ds[0].Count != uint32(attempt) || ds[0].Redelivered() != (attempt > 1) {
			t.Fatalf("attempt %d: deliveries %+v", attempt, ds)
		}
		if err := c.Nack(ds[0].Tag); err != nil {
			t.Fatal(err)
		}
		if attempt == 3 {
			break
		}
		wait := waits[attempt-1]
		h.clock.Advance(wait - time.Millisecond)
		if ds := r.take(); len(ds) != 0 {
			t.Fatalf("attempt %d: redelivered %v early", attempt, wait-time.Millisecond)
		}
		h.clock.Advance(time.Millisecond)
	}
	if ds := r.take(); len(ds) != 0 {
		t.Fatalf("delivered after max_deliveries: %q", bodies(ds))
	}
	_, dr := h.consume("jobs.dlq", engine.ConsumeOptions{})
	ds := dr.take()
	expectBodies(t, "dlq", ds, "poison")
	m := ds[0].Msg
	if m.Topic != "jobs.dlq" || !m.ToQueue {
		t.Fatalf("dead letter addressed to %q (queue %v), want the DLQ", m.Topic, m.ToQueue)
	}
	if prop(m, engine.HeaderDeathReason) != engine.DeathMaxDeliveries ||
		prop(m, engine.HeaderOriginalDestination) != "jobs" ||
		prop(m, engine.HeaderDeathTime) != "1767225603000" || prop(m, "k") != "v" {
		t.Fatalf("dead letter props %+v", m.Props)
	}
	if info, _ := h.b.QueueInfo("jobs"); info.Messages != 0 {
		t.Fatalf("jobs still holds %d", info.Messages)
	}
}

func TestConsumerCloseReturnsUnacked(t *testing.T) {
	h := newHarness(t, engine.Config{})
	h.send("q", "a")
	h.send("q", "b")
	c1, r1 := h.consume("q", engine.ConsumeOptions{Credit: 1})
	expectBodies(t, "c1", r1.take(), "a")
	_, r2 := h.consume("q", engine.ConsumeOptions{Credit: 5})
	expectBodies(t, "c2 before close", r2.take(), "b")
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	ds := r2.take()
	expectBodies(t, "c2 after close", ds, "a")
	if ds[0].Count != 2 || !ds[0].Redelivered() {
		t.Fatalf("returned message count %d", ds[0].Count)
	}
}

func TestAutoAck(t *testing.T) {
	h := newHarness(t, engine.Config{})
	_, r := h.consume("q", engine.ConsumeOptions{AutoAck: true, Credit: 1})
	for _, b := range seq("m", 5) {
		h.send("q", b)
	}
	expectBodies(t, "auto ack ignores credit use", r.take(), seq("m", 5)...)
	if info, _ := h.b.QueueInfo("q"); info.Messages != 0 {
		t.Fatalf("auto-acked messages left: %d", info.Messages)
	}
}

func TestTTLExpiredNeverDelivered(t *testing.T) {
	h := newHarness(t, engine.Config{})
	now := h.clock.Now()
	pub := func(body string, ttl time.Duration) {
		m := &engine.Message{Topic: "q", ToQueue: true, Body: []byte(body), QoS: 1}
		if ttl > 0 {
			m.ExpiresAt = now.Add(ttl).UnixNano()
		}
		if err := h.b.Publish(m); err != nil {
			t.Fatal(err)
		}
	}
	pub("keep1", 0)
	pub("short", time.Second) // in the middle of the queue
	pub("keep2", time.Hour)
	h.clock.Advance(2 * time.Second)
	_, r := h.consume("q", engine.ConsumeOptions{})
	expectBodies(t, "live", r.take(), "keep1", "keep2")
	_, dr := h.consume("q.dlq", engine.ConsumeOptions{})
	ds := dr.take()
	expectBodies(t, "dlq", ds, "short")
	if prop(ds[0].Msg, engine.HeaderDeathReason) != engine.DeathExpired {
		t.Fatalf("reason %q", prop(ds[0].Msg, engine.HeaderDeathReason))
	}
}

func TestQueueTTLExpiresWithoutConsumers(t *testing.T) {
	h := newHarness(t, engine.Config{Rules: []engine.PolicyRule{{Match: "ttl.*", Policy: engine.Policy{TTL: time.Minute}}}})
	h.send("ttl.q", "old")
	h.clock.Advance(30 * time.Second)
	h.send("ttl.q", "young")
	h.clock.Advance(31 * time.Second) // "old" is 61 s old, "young" 31 s
	info, _ := h.b.QueueInfo("ttl.q")
	if info.Messages != 1 || info.Stats.Expired != 1 {
		t.Fatalf("after 61s: %+v", info)
	}
	_, r := h.consume("ttl.q", engine.ConsumeOptions{})
	expectBodies(t, "live", r.take(), "young")
}

func TestOverflowPolicies(t *testing.T) {
	for _, tc := range []struct {
		overflow engine.Overflow
		live     []string
		dlq      []string
		err      bool
	}{
		{engine.OverflowRejectPublish, []string{"m0", "m1", "m2"}, nil, true},
		{engine.OverflowDropHead, []string{"m2", "m3", "m4"}, nil, false},
		{engine.OverflowDeadLetter, []string{"m2", "m3", "m4"}, []string{"m0", "m1"}, false},
	} {
		t.Run(string(tc.overflow), func(t *testing.T) {
			h := newHarness(t, engine.Config{Default: engine.Policy{MaxLength: 3, Overflow: tc.overflow}})
			var rejected int
			for _, body := range seq("m", 5) {
				err := h.b.Publish(&engine.Message{Topic: "q", ToQueue: true, Body: []byte(body), QoS: 1})
				if errors.Is(err, engine.ErrQueueFull) {
					rejected++
				} else if err != nil {
					t.Fatal(err)
				}
			}
			if (rejected > 0) != tc.err || (tc.err && rejected != 2) {
				t.Fatalf("rejected %d publishes", rejected)
			}
			_, r := h.consume("q", engine.ConsumeOptions{})
			expectBodies(t, "live", r.take(), tc.live...)
			if tc.dlq != nil {
				_, dr := h.consume("q.dlq", engine.ConsumeOptions{})
				ds := dr.take()
				expectBodies(t, "dlq", ds, tc.dlq...)
				if prop(ds[0].Msg, engine.HeaderDeathReason) != engine.DeathOverflow {
					t.Fatalf("reason %q", prop(ds[0].Msg, engine.HeaderDeathReason))
				}
			}
		})
	}
}

func TestMaxBytes(t *testing.T) {
	h := newHarness(t, engine.Config{Default: engine.Policy{MaxBytes: 10}})
	h.send("q", "12345")
	h.send("q", "67890")
	err := h.b.Publish(&engine.Message{Topic: "q", ToQueue: true, Body: []byte("x")})
	if !errors.Is(err, engine.ErrQueueFull) {
		t.Fatalf("11th byte: %v", err)
	}
	err = h.b.Publish(&engine.Message{Topic: "big", ToQueue: true, Body: make([]byte, 11)})
	if !errors.Is(err, engine.ErrQueueFull) {
		t.Fatalf("oversized message: %v", err)
	}
}

func TestDelayedDelivery(t *testing.T) {
	h := newHarness(t, engine.Config{})
	_, r := h.consume("q", engine.ConsumeOptions{})
	later := h.clock.Now().Add(10 * time.Second).UnixNano()
	if err := h.b.Publish(&engine.Message{Topic: "q", ToQueue: true, Body: []byte("later"), NotBefore: later, QoS: 1}); err != nil {
		t.Fatal(err)
	}
	h.send("q", "now")
	expectBodies(t, "at once", r.take(), "now")
	h.clock.Advance(9 * time.Second)
	if ds := r.take(); len(ds) != 0 {
		t.Fatalf("delayed message came early: %q", bodies(ds))
	}
	h.clock.Advance(time.Second)
	expectBodies(t, "when due", r.take(), "later")
}
