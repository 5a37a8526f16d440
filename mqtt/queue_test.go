package mqtt_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/engine/memstore"
	"github.com/tandem-mq/tandem/protocol"
)

func timeout() <-chan time.Time { return time.After(waitTimeout) }

// waitEmpty waits until queue holds no message (acks from paho clients
// are sent after their handler returns, so the test polls for them).
func waitEmpty(t *testing.T, b *engine.Broker, queue string) {
	t.Helper()
	waitUntil(t, "queue "+queue+" to empty", func() bool { return queueInfo(t, b, queue).Messages == 0 })
}

// $queue/NAME: a publish enqueues into engine queue NAME (where a STOMP
// /queue/NAME consumer would read it), and subscribers compete: each
// message goes to one of them, with topic $queue/NAME.
func TestQueuePublishAndCompetingConsumers(t *testing.T) {
	br := startBroker(t, options{})
	p := br.dial3("pub")
	p.pub(t, "$queue/jobs", 1, "before")
	if q, err := br.b.QueueInfo("jobs"); err != nil || !q.Durable || q.Messages != 1 {
		t.Fatalf("queue jobs %+v, %v", q, err)
	}
	a, b := br.dial3("a"), br.dial3("b")
	for _, c := range []*v3{a, b} {
		tok := c.Subscribe("$queue/jobs", 1, nil)
		wait(t, tok)
		// paho.mqtt.golang keys the result by "jobs" (it strips $queue/,
		// EMQX's legacy shared-subscription prefix).
		if got := tok.(*pahov3.SubscribeToken).Result()["jobs"]; got != 1 {
			t.Fatalf("granted %d", got)
		}
	}
	for i := range 10 {
		p.pub(t, "$queue/jobs", 1, fmt.Sprint(i))
	}
	seen := map[string]bool{}
	na, nb := 0, 0
	for len(seen) < 11 {
		select {
		case m := <-a.C:
			na++
			seen[string(m.Payload())] = true
			if m.Topic() != "$queue/jobs" {
				t.Fatalf("topic %q", m.Topic())
			}
		case m := <-b.C:
			nb++
			seen[string(m.Payload())] = true
		case <-timeout():
			t.Fatalf("got %d of 11", len(seen))
		}
	}
	if na+nb != 11 {
		t.Fatalf("%d + %d deliveries for 11 messages", na, nb)
	}
	// Every message was acked by PUBACK. The clients' acks are written
	// before their next PUBLISH is handled, and the queue is empty once
	// all are in.
	waitEmpty(t, br.b, "jobs")
}

// An MQTT 5 PUBACK with a reason code >= 0x80 is a NACK: the message comes
// back, and after max_deliveries it goes to the dead-letter queue.
func TestQueueNackRedeliversThenDeadLetters(t *testing.T) {
	br := startBroker(t, options{store: memstore.New()})
	if err := br.b.DeclareQueue("work", engine.QueueOptions{Policy: engine.Policy{MaxDeliveries: 2, RedeliveryDelay: 1, RedeliveryMaxDelay: 1, DeadLetterQueue: "work.dead"}}); err != nil {
		t.Fatal(err)
	}
	r, _ := br.dialRaw("w", 5, packets.Properties{})
	r.subscribe(1, "$queue/work", 1)
	p := br.dial5("pub")
	if _, err := p.Publish(ctx(t), &paho.Publish{Topic: "$queue/work", QoS: 1, Payload: []byte("job")}); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; attempt <= 2; attempt++ {
		pk := r.read()
		if pk.FixedHeader.Type != packets.Publish || pk.TopicName != "$queue/work" || string(pk.Payload) != "job" ||
			pk.FixedHeader.Dup != (attempt > 1) {
			t.Fatalf("attempt %d: got %+v", attempt, pk)
		}
		r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID, ReasonCode: 0x80})
	}
	// The dead letter is consumable over MQTT too.
	r.subscribe(2, "$queue/work.dead", 1)
	pk := r.read()
	if pk.FixedHeader.Type != packets.Publish || pk.TopicName != "$queue/work.dead" || string(pk.Payload) != "job" {
		t.Fatalf("got %+v", pk)
	}
	r.puback(pk.PacketID)
	r.subscribe(3, "x", 0) // the PUBACK was handled before this SUBSCRIBE
	if q, _ := br.b.QueueInfo("work.dead"); q.Messages != 0 {
		t.Fatalf("work.dead still holds %+v", q)
	}
	if q, _ := br.b.QueueInfo("work"); q.Messages != 0 {
		t.Fatalf("work still holds %+v", q)
	}
}

// $share/GROUP/FILTER: members of a group compete for the messages of
// FILTER; another group and a plain subscriber each get every message.
// The group queue is durable: while persistent members are away it keeps
// messages, also across a restart. A group of clean sessions is deleted
// when its last member leaves.
func TestSharedSubscriptions(t *testing.T) {
	o := options{store: memstore.New()}
	br := startBroker(t, o)
	a, b := br.dial5("a", persistent5(60)), br.dial5("b", persistent5(60))
	a.sub(t, "$share/g/s/+", 1)
	b.sub(t, "$share/g/s/+", 1)
	other := br.dial5("o")
	other.sub(t, "$share/h/s/#", 1)
	plain := br.dial5("p")
	plain.sub(t, "s/+", 1)
	p := br.dial5("pub")
	for i := range 10 {
		if _, err := p.Publish(ctx(t), &paho.Publish{Topic: fmt.Sprintf("s/%d", i), QoS: 1, Payload: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for n := 0; n < 10; n++ {
		select {
		case m := <-a.C:
			seen[string(m.Payload)] = true
		case m := <-b.C:
			seen[string(m.Payload)] = true
		case <-timeout():
			t.Fatalf("group g got %d of 10", n)
		}
	}
	if len(seen) != 10 {
		t.Fatalf("group g got duplicates: %v", seen)
	}
	for i := range 10 {
		if m := other.next(t); m.Topic != fmt.Sprintf("s/%d", i) {
			t.Fatalf("group h got %q", m.Topic)
		}
		if m := plain.next(t); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("plain got %q", m.Payload)
		}
	}
	qg, err := protocol.SharedSubscriptionQueue("g", "s/+")
	if err != nil {
		t.Fatal(err)
	}
	qh, _ := protocol.SharedSubscriptionQueue("h", "s/#")
	waitEmpty(t, br.b, qg)

	// Everyone leaves; group g (persistent members) keeps what is
	// published meanwhile, group h (one clean member) is gone.
	for _, c := range []*v5{a, b, other, plain} {
		if err := c.Disconnect(&paho.Disconnect{}); err != nil {
			t.Fatal(err)
		}
	}
	waitUnconsumed(t, br.b, qg)
	if _, err := p.Publish(ctx(t), &paho.Publish{Topic: "s/x", QoS: 1, Payload: []byte("kept")}); err != nil {
		t.Fatal(err)
	}
	br = br.restart(o)
	if _, err := br.b.QueueInfo(qh); !errors.Is(err, engine.ErrNoQueue) {
		t.Fatalf("group h queue kept: %v", err)
	}
	a = br.dial5("a", persistent5(60))
	if !a.Connack.SessionPresent {
		t.Fatal("a not present")
	}
	if m := a.next(t); string(m.Payload) != "kept" || m.Topic != "s/x" {
		t.Fatalf("got %q on %q", m.Payload, m.Topic)
	}
}
