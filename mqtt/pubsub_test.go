package mqtt_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/mqtt"
)

// QoS 0 and 1 between MQTT 3.1.1 clients: the delivered QoS is the lower
// of the publish's and the subscription's [MQTT-3.8.4-8], and the body
// arrives byte for byte.
func TestPubSubQoS311(t *testing.T) {
	br := startBroker(t, options{})
	sub := br.dial3("sub")
	sub.sub(t, "a/b", 1)
	sub.sub(t, "c/d", 0)
	pub := br.dial3("pub")
	body := "hello\x00\xffworld"
	pub.pub(t, "a/b", 1, body)
	pub.pub(t, "a/b", 0, "q0")
	pub.pub(t, "c/d", 1, "down")
	for _, want := range []struct {
		topic, body string
		qos         byte
	}{{"a/b", body, 1}, {"a/b", "q0", 0}, {"c/d", "down", 0}} {
		m := sub.next(t)
		if m.Topic() != want.topic || string(m.Payload()) != want.body || m.Qos() != want.qos {
			t.Fatalf("got %s %q QoS %d, want %s %q QoS %d", m.Topic(), m.Payload(), m.Qos(), want.topic, want.body, want.qos)
		}
	}
}

// The same over MQTT 5, and mixed: a 3.1.1 publisher, an MQTT 5
// subscriber.
func TestPubSubQoS5(t *testing.T) {
	br := startBroker(t, options{})
	sub := br.dial5("sub5")
	sub.sub(t, "a/#", 1)
	pub5 := br.dial5("pub5")
	pub3 := br.dial3("pub3")
	r, err := pub5.Publish(ctx(t), &paho.Publish{Topic: "a/1", QoS: 1, Payload: []byte("one")})
	if err != nil || r.ReasonCode != 0 {
		t.Fatalf("publish: %v %+v", err, r)
	}
	pub3.pub(t, "a/2", 1, "two")
	if _, err := pub5.Publish(ctx(t), &paho.Publish{Topic: "a/3", QoS: 0, Payload: []byte("three")}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		topic, body string
		qos         byte
	}{{"a/1", "one", 1}, {"a/2", "two", 1}, {"a/3", "three", 0}} {
		m := sub.next(t)
		if m.Topic != want.topic || string(m.Payload) != want.body || m.QoS != want.qos {
			t.Fatalf("got %s %q QoS %d, want %+v", m.Topic, m.Payload, m.QoS, want)
		}
	}
	// The CONNACK tells what the server does: QoS 2 (Maximum QoS absent),
	// retained messages, shared subscriptions, and its limits.
	p := sub.Connack.Properties
	if p.MaximumQoS != nil || !p.RetainAvailable || !p.SharedSubAvailable || sub.Connack.SessionPresent {
		t.Fatalf("CONNACK properties %+v", p)
	}
	if p.MaximumPacketSize == nil || *p.MaximumPacketSize != 16<<20 || p.TopicAliasMaximum == nil || *p.TopicAliasMaximum != 64 {
		t.Fatalf("CONNACK limits %+v", p)
	}
}

// Wildcards match per level; '#' includes the parent; topics starting with
// '$' are not matched by a leading wildcard [MQTT-4.7.2-1]. Each publisher's
// messages arrive in order, so the marker published last proves what did
// not arrive.
func TestWildcardsAndDollarTopics(t *testing.T) {
	br := startBroker(t, options{})
	hash := br.dial3("hash")
	hash.sub(t, "#", 1)
	plus := br.dial3("plus")
	plus.sub(t, "+/temp", 1)
	dollar := br.dial3("dollar")
	dollar.sub(t, "$dev/#", 1)
	sport := br.dial3("sport")
	sport.sub(t, "sport/#", 1)

	pub := br.dial3("pub")
	for _, topic := range []string{"$dev/temp", "sport", "kitchen/temp", "kitchen/temp/x", "end"} {
		pub.pub(t, topic, 1, topic)
	}
	expect := map[*v3][]string{
		hash:   {"sport", "kitchen/temp", "kitchen/temp/x", "end"},
		plus:   {"kitchen/temp"},
		dollar: {"$dev/temp"},
		sport:  {"sport"},
	}
	for c, want := range expect {
		for _, w := range want {
			if m := c.next(t); m.Topic() != w {
				t.Fatalf("got %q, want %q", m.Topic(), w)
			}
		}
	}
	// Nothing more reached plus, dollar or sport: a second round ends
	// with a marker each of them matches.
	pub.pub(t, "x/temp", 1, "")
	pub.pub(t, "$dev/end", 1, "")
	pub.pub(t, "sport/end", 1, "")
	for c, want := range map[*v3]string{plus: "x/temp", dollar: "$dev/end", sport: "sport/end"} {
		if m := c.next(t); m.Topic() != want {
			t.Fatalf("got %q, want %q", m.Topic(), want)
		}
	}
}

// Overlapping subscriptions of one client deliver a message once
// [MQTT-3.3.4-2], whether the filters are QoS 0 (one topic subscription),
// QoS 1 (one session queue) or both, at the highest granted QoS.
func TestOverlappingSubscriptionsDeliverOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		qos  [3]byte // of a/+, a/#, #
		want byte
	}{
		{"qos0", [3]byte{0, 0, 0}, 0},
		{"qos1", [3]byte{1, 1, 1}, 1},
		{"mixed", [3]byte{1, 0, 0}, 1},
		{"mixed2", [3]byte{0, 1, 0}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := startBroker(t, options{})
			sub := br.dial3("sub")
			for i, f := range []string{"a/+", "a/#", "#"} {
				sub.sub(t, f, tc.qos[i])
			}
			pub := br.dial3("pub")
			pub.pub(t, "a/b", 1, "x")
			// a/c takes the path a/b took, after it (a separate commit).
			pub.pub(t, "a/c", 1, "marker")
			if m := sub.next(t); m.Topic() != "a/b" || m.Qos() != tc.want {
				t.Fatalf("got %s QoS %d", m.Topic(), m.Qos())
			}
			if m := sub.next(t); m.Topic() != "a/c" {
				t.Fatalf("got %s %q, want the marker: a/b was delivered twice", m.Topic(), m.Payload())
			}
		})
	}
}

// A subscription moved between QoS 0 and 1, and an unsubscribe.
func TestResubscribeAndUnsubscribe(t *testing.T) {
	br := startBroker(t, options{})
	sub := br.dial5("sub")
	pub := br.dial3("pub")
	sub.sub(t, "t/#", 0)
	pub.pub(t, "t/1", 1, "")
	if m := sub.next(t); m.QoS != 0 {
		t.Fatalf("QoS %d", m.QoS)
	}
	sub.sub(t, "t/#", 1)
	pub.pub(t, "t/2", 1, "")
	if m := sub.next(t); m.Topic != "t/2" || m.QoS != 1 {
		t.Fatalf("got %s QoS %d", m.Topic, m.QoS)
	}
	sub.sub(t, "t/#", 0)
	pub.pub(t, "t/3", 1, "")
	if m := sub.next(t); m.Topic != "t/3" || m.QoS != 0 {
		t.Fatalf("got %s QoS %d", m.Topic, m.QoS)
	}
	ua, err := sub.Unsubscribe(ctx(t), &paho.Unsubscribe{Topics: []string{"t/#", "never/subscribed"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(ua.Reasons) != 2 || ua.Reasons[0] != 0 || ua.Reasons[1] != 0x11 {
		t.Fatalf("UNSUBACK reasons %#x", ua.Reasons)
	}
	sub.sub(t, "marker", 0)
	pub.pub(t, "t/4", 1, "")
	pub.pub(t, "marker", 1, "")
	if m := sub.next(t); m.Topic != "marker" {
		t.Fatalf("got %s after unsubscribing", m.Topic)
	}
}

// Refused subscriptions get their failure code, the others in the same
// SUBSCRIBE are granted (QoS 2 as asked); $queue/ and $share/ are
// granted, malformed ones refused.
func TestRefusedSubscriptions(t *testing.T) {
	br := startBroker(t, options{})
	c := br.dial5("c")
	sa, err := c.Subscribe(ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "ok/+", QoS: 2},
		{Topic: "$queue/jobs", QoS: 1},
		{Topic: "bad/#/x", QoS: 0},
	}})
	if sa == nil {
		t.Fatal(err)
	}
	want := []byte{2, 1, 0x8F}
	if string(sa.Reasons) != string(want) {
		t.Fatalf("SUBACK reasons %#x, want %#x", sa.Reasons, want)
	}
	r, _ := br.dialRaw("raw", 5, packets.Properties{})
	r.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    7,
		Filters:     packets.Subscriptions{{Filter: "$share/g/x", Qos: 1}, {Filter: "y", Qos: 0}, {Filter: "$share/g", Qos: 1}, {Filter: "$queue/a+", Qos: 1}},
	})
	if ack := r.read(); ack.FixedHeader.Type != packets.Suback || string(ack.ReasonCodes) != "\x01\x00\x8f\x8f" {
		t.Fatalf("got %+v", ack)
	}
	// MQTT 3.1.1 has one failure code.
	r3, _ := br.dialRaw("raw3", 4, packets.Properties{})
	r3.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    8,
		Filters:     packets.Subscriptions{{Filter: "bad/#/x", Qos: 1}, {Filter: "y", Qos: 1}},
	})
	if ack := r3.read(); ack.FixedHeader.Type != packets.Suback || string(ack.ReasonCodes) != "\x80\x01" {
		t.Fatalf("got %+v", ack)
	}
}

// The subscription limit is enforced per connection.
func TestMaxSubscriptions(t *testing.T) {
	br := startBroker(t, options{cfg: func(c *mqtt.Config) { c.MaxSubscriptions = 2 }})
	c := br.dial5("c")
	c.sub(t, "a", 0)
	c.sub(t, "b", 1)
	c.sub(t, "a", 1) // a change, not a new one
	sa, err := c.Subscribe(ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "c", QoS: 0}}})
	if sa == nil || sa.Reasons[0] != 0x97 {
		t.Fatalf("third subscription: %v %#x", err, sa.Reasons)
	}
}

// QoS 1 deliveries are paced by the client's Receive Maximum and never
// dropped however small the QoS 0 buffer: the backlog waits in the
// engine, and the window reopens with each PUBACK, in order.
func TestQoS1WindowNeverDrops(t *testing.T) {
	br := startBroker(t, options{cfg: func(c *mqtt.Config) { c.TopicBuffer = 1 }})
	c, _ := br.dialRaw("slow", 5, packets.Properties{ReceiveMaximum: 2})
	c.subscribe(1, "w/#", 1)
	const n = 50
	for i := range n {
		if err := br.b.Publish(&engine.Message{Topic: "w/x", QoS: 1, Body: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	// The engine holds the backlog; the client has exactly its window.
	if q := br.sessionQueue(); q.Messages != n || q.Unacked != 2 {
		t.Fatalf("session queue holds %d, %d unacked; want %d, 2", q.Messages, q.Unacked, n)
	}
	for i := range n {
		pk := c.read()
		if string(pk.Payload) != fmt.Sprint(i) || pk.FixedHeader.Qos != 1 {
			t.Fatalf("delivery %d: %q QoS %d", i, pk.Payload, pk.FixedHeader.Qos)
		}
		c.puback(pk.PacketID)
	}
}

// The same with paho.mqtt.golang and many more messages than the window.
func TestQoS1ManyMessages311(t *testing.T) {
	br := startBroker(t, options{cfg: func(c *mqtt.Config) { c.MaxInflight = 4; c.TopicBuffer = 1 }})
	sub := br.dial3("sub")
	sub.sub(t, "many", 1)
	pub := br.dial3("pub")
	const n = 300
	toks := make([]interface{ WaitTimeout(d time.Duration) bool }, 0, n)
	for i := range n {
		toks = append(toks, pub.Publish("many", 1, false, fmt.Sprint(i)))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(waitTimeout) {
			t.Fatal("publish timed out")
		}
	}
	for i := range n {
		if m := sub.next(t); string(m.Payload()) != fmt.Sprint(i) {
			t.Fatalf("message %d: %q", i, m.Payload())
		}
	}
}
