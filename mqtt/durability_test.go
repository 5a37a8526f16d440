package mqtt_test

import (
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/mqtt"
)

// A PUBACK is written only after the store write that makes the message
// durable has returned (DESIGN.md, durability contract). The store holds
// the synced write; the client sends PUBLISH then PINGREQ. mochi answers
// the PINGREQ at once, so the first packet back must be the PINGRESP: a
// PUBACK written before the fsync (as mochi does by itself) would come
// first. After the release, the PUBACK follows.
func TestPubackAfterCommit(t *testing.T) {
	for _, version := range []byte{4, 5} {
		t.Run(map[byte]string{4: "v311", 5: "v5"}[version], func(t *testing.T) {
			gate := newGateStore()
			br := startBroker(t, options{store: gate})
			if err := br.b.DurableSubscription("held", "a/b", engine.QueueOptions{}); err != nil {
				t.Fatal(err)
			}
			c, _ := br.dialRaw("pub", version, packets.Properties{})
			gate.close()
			c.publish("a/b", 1, 1, "durable")
			c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
			<-gate.entered // the commit is in its synced store write
			if pk := c.read(); pk.FixedHeader.Type != packets.Pingresp {
				t.Fatalf("first packet back is type %d, want PINGRESP: acked before the fsync", pk.FixedHeader.Type)
			}
			gate.open()
			if pk := c.read(); pk.FixedHeader.Type != packets.Puback || pk.PacketID != 1 || pk.ReasonCode != 0 {
				t.Fatalf("got %+v, want PUBACK 1", pk)
			}
			if q, err := br.b.QueueInfo("held"); err != nil || q.Messages != 1 {
				t.Fatalf("held: %+v %v", q, err)
			}
		})
	}
}

// A pipelining client's publishes share store writes: 200 QoS 1 publishes
// in flight at once, every one acked in order, all in the durable queue.
func TestPipelinedPublishesShareCommits(t *testing.T) {
	br := startBroker(t, options{})
	if err := br.b.DurableSubscription("all", "p/#", engine.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	c, _ := br.dialRaw("pub", 5, packets.Properties{})
	const n = 200
	for i := 1; i <= n; i++ {
		c.publish("p/x", 1, uint16(i), "m")
	}
	for i := 1; i <= n; i++ {
		if pk := c.read(); pk.FixedHeader.Type != packets.Puback || pk.PacketID != uint16(i) {
			t.Fatalf("ack %d: %+v", i, pk)
		}
	}
	if q, _ := br.b.QueueInfo("all"); q.Messages != n {
		t.Fatalf("queue holds %d", q.Messages)
	}
}

// paho.golang's Publish returns only once the held store write is
// released.
func TestPubackAfterCommitPaho(t *testing.T) {
	gate := newGateStore()
	br := startBroker(t, options{store: gate})
	if err := br.b.DurableSubscription("held", "a/b", engine.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	c := br.dial5("pub")
	gate.close()
	done := make(chan error, 1)
	go func() {
		r, err := c.Publish(ctx(t), &paho.Publish{Topic: "a/b", QoS: 1, Payload: []byte("x")})
		if err == nil && r.ReasonCode != 0 {
			t.Errorf("reason %#x", r.ReasonCode)
		}
		done <- err
	}()
	<-gate.entered
	select {
	case err := <-done:
		t.Fatalf("Publish returned before the store write did: %v", err)
	default:
	}
	gate.open()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A refused publish gets its MQTT 5 reason code: a durable queue that is
// full with overflow reject-publish gives 0x97 (quota exceeded), and the
// publishes around it are unaffected.
func TestRefusedPublishReasonCode(t *testing.T) {
	br := startBroker(t, options{})
	err := br.b.DurableSubscription("tiny", "full/#", engine.QueueOptions{Policy: engine.Policy{MaxLength: 1, Overflow: engine.OverflowRejectPublish}})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := br.dialRaw("pub", 5, packets.Properties{})
	c.publish("full/a", 1, 1, "fits")
	c.publish("full/a", 1, 2, "refused")
	c.publish("other", 1, 3, "fine")
	for _, want := range []struct {
		id   uint16
		code byte
	}{{1, 0}, {2, 0x97}, {3, 0}} {
		if pk := c.read(); pk.FixedHeader.Type != packets.Puback || pk.PacketID != want.id || pk.ReasonCode != want.code {
			t.Fatalf("got %+v, want PUBACK %d with %#x", pk, want.id, want.code)
		}
	}
}

// An MQTT 5 client over the server's Receive Maximum is disconnected with
// 0x93 [MQTT-3.3.4-7]. The store holds the commits so that no PUBACK frees
// a slot meanwhile; the DISCONNECT follows the PUBACKs of the publishes
// before it, once their commit is through.
func TestReceiveMaximumExceeded(t *testing.T) {
	gate := newGateStore()
	br := startBroker(t, options{store: gate, cfg: func(c *mqtt.Config) { c.ReceiveMaximum = 2 }})
	if err := br.b.DurableSubscription("held", "rm", engine.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	c, ack := br.dialRaw("c", 5, packets.Properties{})
	if ack.Properties.ReceiveMaximum != 2 {
		t.Fatalf("CONNACK Receive Maximum %d", ack.Properties.ReceiveMaximum)
	}
	gate.close()
	for i := uint16(1); i <= 3; i++ {
		c.publish("rm", 1, i, "x")
	}
	<-gate.entered
	// The commit is held until the server has read the third publish and
	// decided to disconnect: a PUBACK before that would free a slot.
	waitUntil(t, "the server to refuse the third publish", func() bool { return br.srv.ClosingForTest("c") })
	gate.open()
	c.expect(packets.Puback, 1, 0)
	c.expect(packets.Puback, 2, 0)
	if pk := c.read(); pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != 0x93 {
		t.Fatalf("got %+v, want DISCONNECT 0x93", pk)
	}
}

// A QoS 1 publish to $SYS/... is refused with an ack in order with the
// others (mochi alone drops it with no ack at all): MQTT 5 gets 0x87, MQTT
// 3.1.1 a plain PUBACK (it has no negative one), and nothing is published.
func TestSysPublishAnswered(t *testing.T) {
	br := startBroker(t, options{})
	sub := br.dial3("sub")
	sub.sub(t, "#", 1)
	sub.sub(t, "$SYS/#", 1)
	for _, version := range []byte{5, 4} {
		c, _ := br.dialRaw("pub"+string('0'+version), version, packets.Properties{})
		c.publish("before", 1, 1, "")
		c.publish("$SYS/x", 1, 2, "")
		c.publish("after", 1, 3, "")
		wantCode := map[byte]byte{5: 0x87, 4: 0}[version]
		for _, want := range []struct {
			id   uint16
			code byte
		}{{1, 0}, {2, wantCode}, {3, 0}} {
			if pk := c.read(); pk.FixedHeader.Type != packets.Puback || pk.PacketID != want.id || pk.ReasonCode != want.code {
				t.Fatalf("v%d: got %+v, want PUBACK %d with %#x", version, pk, want.id, want.code)
			}
		}
		for _, want := range []string{"before", "after"} {
			if m := sub.next(t); m.Topic() != want {
				t.Fatalf("got %s, want %s", m.Topic(), want)
			}
		}
	}
}
