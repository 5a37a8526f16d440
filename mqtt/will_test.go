package mqtt_test

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/engine/memstore"
	"github.com/tandem-mq/tandem/mqtt"
)

// dialWill connects a raw client with a will on topic "dev/status"
// (payload "gone", QoS 1) and the given CONNECT changes.
func (br *broker) dialWill(id string, version byte, mod func(*packets.Packet)) *raw {
	br.t.Helper()
	c, _ := br.dialConnect(id, version, func(pk *packets.Packet) {
		pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload, pk.Connect.WillQos = true, "dev/status", []byte("gone"), 1
		if mod != nil {
			mod(pk)
		}
	})
	return c
}

// waitNoConns waits until the server has torn every connection down.
func waitNoConns(t *testing.T, srv *mqtt.Server) {
	t.Helper()
	waitUntil(t, "connections torn down", func() bool { return srv.Conns() == 0 })
}

// engineSub subscribes an engine (STOMP-style) subscriber to filter.
func engineSub(t *testing.T, b *engine.Broker, filter string) chanSink {
	t.Helper()
	ch := make(chanSink, 100)
	s, err := b.Subscribe(filter, ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return ch
}

// expectOnly publishes a marker on topic and checks that it is the next
// message ch receives (nothing else was published before it).
func expectOnly(t *testing.T, b *engine.Broker, ch chanSink, topic string) {
	t.Helper()
	if err := b.Publish(&engine.Message{Topic: topic, Body: []byte("marker")}); err != nil {
		t.Fatal(err)
	}
	if m := recvEngine(t, ch); string(m.Body) != "marker" {
		t.Fatalf("got %q before the marker", m.Body)
	}
}

func willRecords(t *testing.T, b *engine.Broker) int {
	t.Helper()
	n := 0
	if err := b.ScanKV("mqtt.will", func(string, []byte) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// A connection closed without DISCONNECT publishes its will through the
// engine: an engine subscriber (as STOMP uses) receives it.
func TestWillOnAbruptClose(t *testing.T) {
	for _, v := range []byte{4, 5} {
		br := startBroker(t, options{})
		ch := engineSub(t, br.b, "dev/#")
		c := br.dialWill("w", v, nil)
		if n := willRecords(t, br.b); n != 1 {
			t.Fatalf("v%d: %d will records after CONNECT, want 1", v, n)
		}
		c.nc.Close()
		m := recvEngine(t, ch)
		if m.Topic != "dev/status" || string(m.Body) != "gone" || m.QoS != 1 || m.Origin != "mqtt:w" {
			t.Fatalf("v%d: will %+v", v, m)
		}
		waitNoConns(t, br.srv)
		if n := willRecords(t, br.b); n != 0 {
			t.Fatalf("v%d: %d will records after publishing, want 0", v, n)
		}
		br.close()
	}
}

// A normal DISCONNECT discards the will; MQTT 5 DISCONNECT 0x04 publishes it.
func TestWillDisconnect(t *testing.T) {
	for _, tc := range []struct {
		v       byte
		code    byte
		publish bool
	}{{4, 0, false}, {5, 0, false}, {5, packets.CodeDisconnectWillMessage.Code, true}} {
		br := startBroker(t, options{})
		ch := engineSub(t, br.b, "dev/#")
		c := br.dialWill("w", tc.v, nil)
		c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ReasonCode: tc.code})
		waitNoConns(t, br.srv)
		if tc.publish {
			if m := recvEngine(t, ch); string(m.Body) != "gone" {
				t.Fatalf("v%d %#x: got %q", tc.v, tc.code, m.Body)
			}
		} else {
			expectOnly(t, br.b, ch, "dev/marker")
		}
		if n := willRecords(t, br.b); n != 0 {
			t.Fatalf("v%d %#x: %d will records left", tc.v, tc.code, n)
		}
		br.close()
	}
}

// MQTT 5 will properties are mapped like a PUBLISH's, and a retained will
// is retained.
func TestWillPropertiesRetained(t *testing.T) {
	br := startBroker(t, options{})
	c := br.dialWill("w", 5, func(pk *packets.Packet) {
		pk.Connect.WillRetain = true
		pk.Connect.WillProperties = packets.Properties{
			ContentType: "text/plain", User: []packets.UserProperty{{Key: "k", Val: "v"}},
		}
	})
	sub := br.dial5("s")
	sub.sub(t, "dev/status", 1)
	c.nc.Close()
	m := sub.next(t)
	if string(m.Payload) != "gone" || m.Properties.ContentType != "text/plain" || m.Properties.User.Get("k") != "v" {
		t.Fatalf("will %+v %+v", m, m.Properties)
	}
	late := br.dial5("late")
	late.sub(t, "dev/status", 1)
	if m := late.next(t); string(m.Payload) != "gone" || !m.Retain {
		t.Fatalf("retained will %+v", m)
	}
}

func willDelay(delay, expiry uint32) func(*packets.Packet) {
	return func(pk *packets.Packet) {
		pk.Connect.Clean = false
		pk.Properties.SessionExpiryInterval, pk.Properties.SessionExpiryIntervalFlag = expiry, true
		pk.Connect.WillProperties.WillDelayInterval = delay
	}
}

// The Will Delay Interval holds the will back; a reconnect within it
// cancels the will; the session expiry caps it.
func TestWillDelay(t *testing.T) {
	clk := engine.NewFakeClock(time.Unix(1_000_000, 0))
	br := startBroker(t, options{cfg: func(c *mqtt.Config) { c.Clock = clk }})
	ch := engineSub(t, br.b, "dev/#")

	c := br.dialWill("w", 5, willDelay(30, 3600))
	c.nc.Close()
	waitNoConns(t, br.srv)
	clk.Advance(29 * time.Second)
	expectOnly(t, br.b, ch, "dev/marker")
	clk.Advance(time.Second)
	if m := recvEngine(t, ch); string(m.Body) != "gone" {
		t.Fatalf("got %q", m.Body)
	}

	// Reconnect within the delay: no will.
	c = br.dialWill("w", 5, willDelay(30, 3600))
	c.nc.Close()
	waitNoConns(t, br.srv)
	clk.Advance(10 * time.Second)
	c = br.dialWill("w", 5, func(pk *packets.Packet) {
		willDelay(30, 3600)(pk)
		pk.Connect.WillFlag = false
	})
	clk.Advance(time.Minute)
	expectOnly(t, br.b, ch, "dev/marker")
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	waitNoConns(t, br.srv)

	// Session expiry shorter than the delay: the will goes when the
	// session ends.
	c = br.dialWill("w2", 5, willDelay(300, 10))
	c.nc.Close()
	waitNoConns(t, br.srv)
	clk.Advance(9 * time.Second)
	expectOnly(t, br.b, ch, "dev/marker")
	clk.Advance(time.Second)
	if m := recvEngine(t, ch); string(m.Body) != "gone" {
		t.Fatalf("got %q", m.Body)
	}
	if n := willRecords(t, br.b); n != 0 {
		t.Fatalf("%d will records left", n)
	}
}

// A will stored for a connection open when the broker stopped is published
// at the next start, into a queue bound to its topic; a delayed one counts
// its delay from the start.
func TestWillAfterRestart(t *testing.T) {
	clk := engine.NewFakeClock(time.Unix(1_000_000, 0))
	o := options{store: memstore.New(), cfg: func(c *mqtt.Config) { c.Clock = clk }}
	br := startBroker(t, o)
	if err := br.b.DeclareQueue("wills", engine.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := br.b.Bind("dev/#", "wills"); err != nil {
		t.Fatal(err)
	}
	br.dialWill("now", 4, nil)
	br.dialWill("later", 5, func(pk *packets.Packet) {
		willDelay(30, 3600)(pk)
		pk.Connect.WillTopic = "dev/later"
	})
	br = br.restart(o)
	q, err := br.b.QueueInfo("wills")
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != 1 {
		t.Fatalf("queue holds %d messages after restart, want 1", q.Messages)
	}
	if n := willRecords(t, br.b); n != 1 {
		t.Fatalf("%d will records, want the delayed one", n)
	}
	clk.Advance(30 * time.Second)
	if q, _ := br.b.QueueInfo("wills"); q.Messages != 2 {
		t.Fatalf("queue holds %d messages after the delay, want 2", q.Messages)
	}
	ch := make(chanSink, 10)
	cons, err := br.b.Consume("wills", ch, engine.ConsumeOptions{Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	for _, want := range []string{"dev/status", "dev/later"} {
		if m := recvEngine(t, ch); m.Topic != want || string(m.Body) != "gone" {
			t.Fatalf("got %+v, want will on %s", m, want)
		}
	}
}

// A will whose topic cannot be published to is refused at CONNECT.
func TestWillInvalidTopic(t *testing.T) {
	br := startBroker(t, options{})
	nc, err := net.Dial("tcp", br.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(waitTimeout))
	c := &raw{t: t, nc: nc, r: bufio.NewReader(nc), v: 5}
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: "w",
			WillFlag: true, WillTopic: "$SYS/x", WillPayload: []byte("gone"),
		},
	})
	ack := c.read()
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != packets.ErrTopicNameInvalid.Code {
		t.Fatalf("CONNECT answered with %+v", ack)
	}
	if n := willRecords(t, br.b); n != 0 {
		t.Fatalf("%d will records", n)
	}
}

// A session takeover ends the old connection without DISCONNECT: its will
// is published.
func TestWillOnTakeover(t *testing.T) {
	br := startBroker(t, options{})
	ch := engineSub(t, br.b, "dev/#")
	br.dialWill("w", 4, nil)
	br.dialWill("w", 4, func(pk *packets.Packet) { pk.Connect.WillFlag = false })
	if m := recvEngine(t, ch); string(m.Body) != "gone" {
		t.Fatalf("got %q", m.Body)
	}
	if n := willRecords(t, br.b); n != 0 {
		t.Fatalf("%d will records", n)
	}
}

// A will with a zero-length payload is valid (mochi alone refuses the
// CONNECT as a protocol error): it is accepted and published with an
// empty body when the connection drops.
func TestEmptyWillPayload(t *testing.T) {
	for _, ver := range versions {
		t.Run(ver.name, func(t *testing.T) {
			br := startBroker(t, options{})
			ch := engineSub(t, br.b, "dev/#")
			c := br.dialWill("empty", ver.v, func(pk *packets.Packet) { pk.Connect.WillPayload = nil })
			c.nc.Close()
			if m := recvEngine(t, ch); m.Topic != "dev/status" || len(m.Body) != 0 {
				t.Fatalf("will: %s %q, want dev/status with an empty body", m.Topic, m.Body)
			}
		})
	}
}
