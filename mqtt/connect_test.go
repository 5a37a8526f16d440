package mqtt_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/mqtt"
)

// MQTT 3.1.1 refusals use 3.1.1 return codes: clean session 0 with an
// empty client id gets 0x02 [MQTT-3.1.3-8] (mochi alone sends 0x80, which
// 3.1.1 does not have); a CONNECT with its reserved flag set is malformed
// and gets no CONNACK at all [MQTT-3.1.2-3, MQTT-3.1.4-1].
func TestConnectRefusalsV311(t *testing.T) {
	br := startBroker(t, options{})
	_, ack, err := br.tryConnect("", 4, func(pk *packets.Packet) { pk.Connect.Clean = false })
	if err != nil || ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0x02 || ack.SessionPresent {
		t.Fatalf("empty client id, clean session 0: got %+v (%v), want CONNACK 0x02", ack, err)
	}
	// mochi's encoder cannot set the reserved flag: the CONNECT is written
	// by hand (clean session and reserved bit set, keepalive 30, id "x").
	nc, err := net.Dial("tcp", br.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := nc.Write([]byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x03, 0, 30, 0, 1, 'x'}); err != nil {
		t.Fatal(err)
	}
	if n, err := nc.Read(make([]byte, 16)); err != io.EOF {
		t.Fatalf("reserved connect flag: read %d bytes (%v), want the connection closed without CONNACK", n, err)
	}
}

// A session taken over by a new MQTT 3.1.1 connection ends with a plain
// close: 3.1.1 has no DISCONNECT from the server (mochi would send one).
// An MQTT 5 connection gets DISCONNECT 0x8E.
func TestTakeoverClosesV311WithoutDisconnect(t *testing.T) {
	br := startBroker(t, options{})
	old3, _ := br.dialRaw("same3", 4, packets.Properties{})
	br.dialRaw("same3", 4, packets.Properties{})
	if pk, err := old3.tryRead(); err != io.EOF {
		t.Fatalf("old MQTT 3.1.1 connection got %+v (%v), want a plain close", pk.FixedHeader, err)
	}
	old5, _ := br.dialRaw("same5", 5, packets.Properties{})
	br.dialRaw("same5", 5, packets.Properties{})
	if pk := old5.read(); pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != 0x8E {
		t.Fatalf("old MQTT 5 connection got %+v, want DISCONNECT 0x8E", pk.FixedHeader)
	}
}

// Keepalive bounds: an MQTT 5 client asking for 0, for more than the
// maximum or for less than the minimum is told the value it gets (Server
// Keep Alive [MQTT-3.2.2-21]); one asking for a value within the bounds is
// told nothing.
func TestServerKeepAlive(t *testing.T) {
	br := startBroker(t, options{})
	for _, tc := range []struct {
		ask  uint16
		want *uint16
	}{{0, ptr[uint16](3600)}, {7200, ptr[uint16](3600)}, {2, ptr[uint16](5)}, {60, nil}} {
		c := br.dial5("ka", func(cp *paho.Connect) { cp.KeepAlive = tc.ask })
		got := c.Connack.Properties.ServerKeepAlive
		if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
			t.Fatalf("keepalive %d: Server Keep Alive %v, want %v", tc.ask, deref(got), deref(tc.want))
		}
		_ = c.Disconnect(&paho.Disconnect{})
	}
}

// An MQTT 3.1.1 client cannot be told another keepalive, so one shorter
// than keepalive_min is kept: the server closes the connection once it has
// been silent for 1.5 times it [MQTT-3.1.2-24].
func TestShortKeepaliveV311Kept(t *testing.T) {
	br := startBroker(t, options{})
	c, _ := br.dialConnect("short", 4, func(pk *packets.Packet) { pk.Connect.Keepalive = 1 })
	start := time.Now()
	if pk, err := c.tryRead(); err != io.EOF {
		t.Fatalf("got %+v (%v), want the connection closed", pk.FixedHeader, err)
	}
	// 1.5 s is the spec's bound; the minimum (5 s) would give 7.5 s. The
	// read deadline is waitTimeout (10 s), so only a close can end early.
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("closed after %v: the 1 s keepalive was not kept", d)
	}
}

func ptr[T any](v T) *T { return &v }

func deref(p *uint16) any {
	if p == nil {
		return nil
	}
	return *p
}

// MQTT 5 topic aliases: an alias set by a PUBLISH stands for its topic in
// later ones (and a $SYS topic behind an alias is still refused with
// 0x87); an alias the connection never set is a protocol error, DISCONNECT
// 0x82 (aliases do not outlive their connection [MQTT-3.3.2-7]), not a
// PUBACK refusing a bad topic.
func TestTopicAliases(t *testing.T) {
	br := startBroker(t, options{})
	ch := engineSub(t, br.b, "al/#")
	c, _ := br.dialRaw("al", 5, packets.Properties{})
	pub := func(topic string, alias, id uint16) {
		c.send(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1},
			TopicName:   topic, PacketID: id, Payload: []byte("m"),
			Properties: packets.Properties{TopicAlias: alias, TopicAliasFlag: true},
		})
	}
	pub("al/x", 3, 1)
	c.expect(packets.Puback, 1, 0)
	pub("", 3, 2)
	c.expect(packets.Puback, 2, 0)
	for range 2 {
		if m := recvEngine(t, ch); m.Topic != "al/x" {
			t.Fatalf("got %s, want al/x", m.Topic)
		}
	}
	pub("$SYS/x", 5, 3)
	c.expect(packets.Puback, 3, 0x87)
	pub("", 5, 4)
	c.expect(packets.Puback, 4, 0x87)
	pub("", 4, 5)
	if pk := c.read(); pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != 0x82 {
		t.Fatalf("unknown alias: got %+v, want DISCONNECT 0x82", pk.FixedHeader)
	}
}

// MQTT 3.1.1 keepalive 0 turns the keepalive off: a client that only
// receives is never cut off for silence (MQTT 5 clients are told the
// maximum instead, TestServerKeepAlive). mochi sets no read deadline for
// 0, which is what this checks through the hook's decision.
func TestKeepaliveZeroV311(t *testing.T) {
	br := startBroker(t, options{cfg: func(c *mqtt.Config) { c.KeepaliveMin, c.KeepaliveMax = time.Second, time.Second }})
	c, _ := br.dialConnect("idle", 4, func(pk *packets.Packet) { pk.Connect.Keepalive = 0 })
	// With the maximum (1 s) applied, the server would close the
	// connection after 1.5 s of silence; 3 s later it is still open.
	_ = c.nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	if pk, err := c.tryRead(); err == nil {
		t.Fatalf("got %+v", pk.FixedHeader)
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("the connection was closed: %v", err)
	}
}
