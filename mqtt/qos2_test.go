package mqtt_test

import (
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/engine/memstore"
	"github.com/tandem-mq/tandem/mqtt"
)

var versions = []struct {
	name string
	v    byte
}{{"v311", 4}, {"v5", 5}}

// Inbound QoS 2 is exactly once: a PUBLISH re-sent before PUBREL is
// answered with PUBREC again (reason 0x00, not mochi's 0x91) and not
// published twice [MQTT-4.3.3-10]; PUBREL gets PUBCOMP; after it the same
// id carries a new message [MQTT-4.3.3-13]; a PUBREL for an unknown id gets
// PUBCOMP 0x92 (MQTT 5).
func TestQoS2InboundOnce(t *testing.T) {
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			br := startBroker(t, options{})
			if err := br.b.DurableSubscription("two", "two", engine.QueueOptions{}); err != nil {
				t.Fatal(err)
			}
			c, _ := br.dialRaw("pub", ver.v, packets.Properties{})
			c.publish("two", 2, 7, "first")
			c.expect(packets.Pubrec, 7, 0)
			c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2, Dup: true}, TopicName: "two", PacketID: 7, Payload: []byte("first")})
			c.expect(packets.Pubrec, 7, 0)
			if q := queueInfo(t, br.b, "two"); q.Messages != 1 {
				t.Fatalf("queue holds %d after a re-sent QoS 2 publish, want 1", q.Messages)
			}
			c.ack(packets.Pubrel, 7)
			c.expect(packets.Pubcomp, 7, 0)
			unknown := byte(0)
			if ver.v == 5 {
				unknown = 0x92
			}
			c.ack(packets.Pubrel, 7)
			c.expect(packets.Pubcomp, 7, unknown)
			c.publish("two", 2, 7, "second")
			c.expect(packets.Pubrec, 7, 0)
			c.ack(packets.Pubrel, 7)
			c.expect(packets.Pubcomp, 7, 0)
			if q := queueInfo(t, br.b, "two"); q.Messages != 2 {
				t.Fatalf("queue holds %d, want 2", q.Messages)
			}
		})
	}
}

// PUBREC, like PUBACK, follows the store write that makes the message
// durable: the PINGRESP asked for after the PUBLISH comes back first while
// the synced write is held.
func TestPubrecAfterCommit(t *testing.T) {
	gate := newGateStore()
	br := startBroker(t, options{store: gate})
	if err := br.b.DurableSubscription("held", "a/b", engine.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	c, _ := br.dialRaw("pub", 5, packets.Properties{})
	gate.close()
	c.publish("a/b", 2, 1, "durable")
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	<-gate.entered
	if pk := c.read(); pk.FixedHeader.Type != packets.Pingresp {
		t.Fatalf("first packet back is type %d, want PINGRESP: PUBREC before the fsync", pk.FixedHeader.Type)
	}
	gate.open()
	c.expect(packets.Pubrec, 1, 0)
}

// A persistent session's received QoS 2 ids survive a restart: the
// client's re-sent PUBLISH after reconnecting is recognised (PUBREC, no
// second copy) and its PUBREL completes it.
func TestQoS2InboundAcrossRestart(t *testing.T) {
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			o := options{store: memstore.New()}
			br := startBroker(t, o)
			if err := br.b.DurableSubscription("two", "two", engine.QueueOptions{}); err != nil {
				t.Fatal(err)
			}
			props := packets.Properties{SessionExpiryInterval: 600, SessionExpiryIntervalFlag: true}
			c, _ := br.dialRawClean("pub", ver.v, false, props)
			c.publish("two", 2, 9, "once")
			c.expect(packets.Pubrec, 9, 0)
			br = br.restart(o)
			c, ack := br.dialRawClean("pub", ver.v, false, props)
			if !ack.SessionPresent {
				t.Fatal("session present 0")
			}
			c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2, Dup: true}, TopicName: "two", PacketID: 9, Payload: []byte("once")})
			c.expect(packets.Pubrec, 9, 0)
			c.ack(packets.Pubrel, 9)
			c.expect(packets.Pubcomp, 9, 0)
			if q := queueInfo(t, br.b, "two"); q.Messages != 1 {
				t.Fatalf("queue holds %d, want 1", q.Messages)
			}
			if n := kvCount(t, br.b, "mqtt.qos2in"); n != 0 {
				t.Fatalf("%d QoS 2 records left after PUBCOMP", n)
			}
		})
	}
}

// Outbound QoS 2 with paho.golang: a QoS 2 publish reaches a QoS 2
// subscriber once with QoS 2, a QoS 1 subscriber with QoS 1, and a STOMP
// (QoS 1) message reaches the QoS 2 subscriber with QoS 1.
func TestQoS2PubSubPaho(t *testing.T) {
	br := startBroker(t, options{})
	sub2 := br.dial5("sub2")
	sub2.sub(t, "q2/#", 2)
	sub1 := br.dial5("sub1")
	sub1.sub(t, "q2/#", 1)
	pub := br.dial5("pub")
	r, err := pub.Publish(ctx(t), &paho.Publish{Topic: "q2/a", QoS: 2, Payload: []byte("exactly")})
	if err != nil || r.ReasonCode != 0 {
		t.Fatalf("publish: %v %+v", err, r)
	}
	if m := sub2.next(t); m.QoS != 2 || string(m.Payload) != "exactly" {
		t.Fatalf("QoS 2 subscriber got QoS %d %q", m.QoS, m.Payload)
	}
	if m := sub1.next(t); m.QoS != 1 || string(m.Payload) != "exactly" {
		t.Fatalf("QoS 1 subscriber got QoS %d %q", m.QoS, m.Payload)
	}
	if err := br.b.Publish(&engine.Message{Topic: "q2/b", QoS: 1, Body: []byte("from stomp")}); err != nil {
		t.Fatal(err)
	}
	if m := sub2.next(t); m.QoS != 1 || string(m.Payload) != "from stomp" {
		t.Fatalf("QoS 2 subscriber got QoS %d %q", m.QoS, m.Payload)
	}
	// Nothing more: each message arrived once.
	if _, err := pub.Publish(ctx(t), &paho.Publish{Topic: "q2/end", QoS: 2, Payload: []byte("end")}); err != nil {
		t.Fatal(err)
	}
	if m := sub2.next(t); string(m.Payload) != "end" {
		t.Fatalf("got %q, want end", m.Payload)
	}
}

// Outbound QoS 2 of a persistent session survives restarts: a PUBLISH not
// yet PUBRECed is sent again after the restart with its packet id and DUP
// set (so the client's duplicate detection works); a PUBRECed one has its
// PUBREL sent again until PUBCOMP; after PUBCOMP nothing comes back.
func TestQoS2OutboundAcrossRestart(t *testing.T) {
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			o := options{store: memstore.New()}
			br := startBroker(t, o)
			props := packets.Properties{SessionExpiryInterval: 600, SessionExpiryIntervalFlag: true}
			c, _ := br.dialRawClean("sub", ver.v, false, props)
			c.subscribe(1, "out/#", 2)
			if err := br.b.Publish(&engine.Message{Topic: "out/x", QoS: 2, Body: []byte("m")}); err != nil {
				t.Fatal(err)
			}
			first := c.read()
			if first.FixedHeader.Type != packets.Publish || first.FixedHeader.Qos != 2 || first.FixedHeader.Dup {
				t.Fatalf("got %+v", first.FixedHeader)
			}
			id := first.PacketID

			br = br.restart(o)
			c, ack := br.dialRawClean("sub", ver.v, false, props)
			if !ack.SessionPresent {
				t.Fatal("session present 0")
			}
			again := c.read()
			if again.FixedHeader.Type != packets.Publish || again.PacketID != id || !again.FixedHeader.Dup || string(again.Payload) != "m" {
				t.Fatalf("resend: type %d id %d (want %d) dup %v %q", again.FixedHeader.Type, again.PacketID, id, again.FixedHeader.Dup, again.Payload)
			}
			c.ack(packets.Pubrec, id)
			c.expect(packets.Pubrel, id, 0)
			if q := queueInfo(t, br.b, "$mqtt/sub"); q.Messages != 0 {
				t.Fatalf("session queue holds %d after PUBREC", q.Messages)
			}

			br = br.restart(o)
			c, _ = br.dialRawClean("sub", ver.v, false, props)
			c.expect(packets.Pubrel, id, 0)
			c.ack(packets.Pubcomp, id)
			waitUntil(t, "the QoS 2 record to go", func() bool { return kvCount(t, br.b, "mqtt.qos2out") == 0 })

			br = br.restart(o)
			c, _ = br.dialRawClean("sub", ver.v, false, props)
			c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
			if pk := c.read(); pk.FixedHeader.Type != packets.Pingresp {
				t.Fatalf("got type %d after PUBCOMP and restart, want only PINGRESP", pk.FixedHeader.Type)
			}
		})
	}
}

// A PUBREC for an id the server never used gets PUBREL 0x92 (MQTT 5); an
// MQTT 5 PUBREC with a failure code refuses the message, which comes back
// (it is NACKed) with a new PUBLISH.
func TestQoS2OutboundRefusals(t *testing.T) {
	br := startBroker(t, options{})
	c, _ := br.dialRaw("sub", 5, packets.Properties{})
	c.ack(packets.Pubrec, 4242)
	c.expect(packets.Pubrel, 4242, 0x92)
	if err := br.b.DeclareQueue("jobs", engine.QueueOptions{Policy: engine.Policy{RedeliveryDelay: 1}}); err != nil {
		t.Fatal(err)
	}
	c.subscribe(1, "$queue/jobs", 2)
	if err := br.b.Publish(&engine.Message{Topic: "jobs", ToQueue: true, QoS: 2, Body: []byte("j")}); err != nil {
		t.Fatal(err)
	}
	first := c.read()
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrec}, PacketID: first.PacketID, ReasonCode: 0x80})
	again := c.read()
	if again.FixedHeader.Type != packets.Publish || !again.FixedHeader.Dup || string(again.Payload) != "j" {
		t.Fatalf("after a refusing PUBREC got %+v", again.FixedHeader)
	}
	c.ack(packets.Pubrec, again.PacketID)
	c.expect(packets.Pubrel, again.PacketID, 0)
	c.ack(packets.Pubcomp, again.PacketID)
	waitUntil(t, "the job to be acked", func() bool { return queueInfo(t, br.b, "jobs").Messages == 0 })
}

func kvCount(t *testing.T, b *engine.Broker, ns string) int {
	t.Helper()
	n := 0
	if err := b.ScanKV(ns, func(string, []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// Over Receive Maximum (MQTT 5: QoS 1 and 2 publishes count until PUBACK
// and PUBCOMP), the connection ends with DISCONNECT 0x93, but only after
// the acks of every publish before it: 1,024 PUBRECs, then the DISCONNECT
// (mochi alone wrote its DISCONNECT ahead of acks still queued).
func TestReceiveMaximumAcksFirst(t *testing.T) {
	br := startBroker(t, options{})
	c, _ := br.dialRaw("fc", 5, packets.Properties{})
	max := mqtt.DefaultConfig().ReceiveMaximum
	for i := 1; i <= max+1; i++ {
		c.publish("fc/x", 2, uint16(i), "m")
	}
	for i := 1; i <= max; i++ {
		c.expect(packets.Pubrec, uint16(i), 0)
	}
	if pk := c.read(); pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != 0x93 {
		t.Fatalf("after %d PUBRECs got %+v, want DISCONNECT 0x93", max, pk.FixedHeader)
	}
}
