package mqtt_test

import (
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/engine/memstore"
	"github.com/tandem-mq/tandem/mqtt"
)

// A RETAIN publish sets its topic's retained message (an empty payload
// clears it); a SUBSCRIBE gets the matching ones after its SUBACK with
// RETAIN 1, while live deliveries carry RETAIN 0; they survive a restart.
func TestRetainedMessages(t *testing.T) {
	o := options{store: memstore.New()}
	br := startBroker(t, o)
	p := br.dial5("pub")
	for _, m := range []struct{ topic, body string }{{"r/a", "A"}, {"r/b", "B"}, {"r/c", "C"}, {"r/c", ""}} {
		if _, err := p.Publish(ctx(t), &paho.Publish{Topic: m.topic, QoS: 1, Retain: true, Payload: []byte(m.body)}); err != nil {
			t.Fatal(err)
		}
	}
	s3 := br.dial3("s3")
	s3.sub(t, "r/+", 1)
	for _, want := range []string{"A", "B"} {
		m := s3.next(t)
		if string(m.Payload()) != want || !m.Retained() || m.Qos() != 1 {
			t.Fatalf("got %q retained %v QoS %d, want %q retained", m.Payload(), m.Retained(), m.Qos(), want)
		}
	}
	// Live: RETAIN 0 to a plain subscription.
	if _, err := p.Publish(ctx(t), &paho.Publish{Topic: "r/a", QoS: 1, Retain: true, Payload: []byte("A2")}); err != nil {
		t.Fatal(err)
	}
	if m := s3.next(t); string(m.Payload()) != "A2" || m.Retained() {
		t.Fatalf("live delivery %q retained %v", m.Payload(), m.Retained())
	}

	br = br.restart(o)
	s5 := br.dial5("s5")
	s5.sub(t, "r/#", 0)
	for _, want := range []string{"A2", "B"} {
		m := s5.next(t)
		if string(m.Payload) != want || !m.Retain || m.QoS != 0 {
			t.Fatalf("after restart: got %q retain %v QoS %d, want %q", m.Payload, m.Retain, m.QoS, want)
		}
	}
}

// MQTT 5 Retain Handling: 1 sends retained messages only for a new
// subscription, 2 never; Retain As Published keeps RETAIN on live
// deliveries.
func TestRetainHandling(t *testing.T) {
	br := startBroker(t, options{})
	p := br.dial5("pub")
	if _, err := p.Publish(ctx(t), &paho.Publish{Topic: "h", QoS: 1, Retain: true, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	r, _ := br.dialRaw("r", 5, packets.Properties{})
	sub := func(id uint16, rh byte, rap bool) {
		r.send(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
			PacketID:    id,
			Filters:     packets.Subscriptions{{Filter: "h", Qos: 1, RetainHandling: rh, RetainAsPublished: rap}},
		})
		if ack := r.read(); ack.FixedHeader.Type != packets.Suback || ack.PacketID != id {
			t.Fatalf("got %+v, want SUBACK %d", ack, id)
		}
	}
	sub(1, 2, false) // never
	sub(2, 1, false) // exists already: not sent
	sub(3, 0, true)  // always
	pk := r.read()
	if pk.FixedHeader.Type != packets.Publish || !pk.FixedHeader.Retain || string(pk.Payload) != "x" {
		t.Fatalf("got %+v", pk)
	}
	r.puback(pk.PacketID)
	if _, err := p.Publish(ctx(t), &paho.Publish{Topic: "h", QoS: 1, Retain: true, Payload: []byte("y")}); err != nil {
		t.Fatal(err)
	}
	if pk := r.read(); pk.FixedHeader.Type != packets.Publish || !pk.FixedHeader.Retain || string(pk.Payload) != "y" {
		t.Fatalf("Retain As Published: got %+v", pk)
	}
}

// The retained store is bounded: past max_retained a RETAIN publish to a
// new topic is delivered but not retained (and counted); replacing or
// clearing a retained message still works, and clearing makes room.
func TestRetainedLimit(t *testing.T) {
	br := startBroker(t, options{cfg: func(c *mqtt.Config) { c.MaxRetained = 2 }})
	live := br.dial5("live")
	live.sub(t, "lim/#", 1)
	p := br.dial5("pub")
	publish := func(topic, body string) {
		t.Helper()
		if _, err := p.Publish(ctx(t), &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte(body)}); err != nil {
			t.Fatal(err)
		}
		if m := live.next(t); m.Topic != topic || string(m.Payload) != body {
			t.Fatalf("live subscriber got %s %q, want %s %q", m.Topic, m.Payload, topic, body)
		}
	}
	retainedNow := func(want ...string) {
		t.Helper()
		s := br.dial5("check")
		s.sub(t, "lim/#", 0)
		for _, w := range want {
			if m := s.next(t); m.Topic+"="+string(m.Payload) != w || !m.Retain {
				t.Fatalf("retained %s=%q (retain %v), want %s", m.Topic, m.Payload, m.Retain, w)
			}
		}
		// Nothing more: a live marker comes next.
		if _, err := p.Publish(ctx(t), &paho.Publish{Topic: "lim/zz-marker", QoS: 1, Payload: []byte("m")}); err != nil {
			t.Fatal(err)
		}
		if m := s.next(t); m.Topic != "lim/zz-marker" || m.Retain {
			t.Fatalf("got %s %q retain %v, want the live marker", m.Topic, m.Payload, m.Retain)
		}
		live.next(t)
		_ = s.Disconnect(&paho.Disconnect{})
	}
	publish("lim/a", "A")
	publish("lim/b", "B")
	publish("lim/c", "C") // full: delivered, not retained
	if n := br.srv.RetainedRefused.Load(); n != 1 {
		t.Fatalf("RetainedRefused = %d, want 1", n)
	}
	publish("lim/a", "A2") // a replacement fits
	retainedNow("lim/a=A2", "lim/b=B")
	publish("lim/b", "") // cleared: room for one
	publish("lim/c", "C2")
	retainedNow("lim/a=A2", "lim/c=C2")
}
