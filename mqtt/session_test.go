package mqtt_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/engine/memstore"
	"github.com/tandem-mq/tandem/mqtt"
)

// restart closes the server and the engine and opens both again on the
// same store.
func (br *broker) restart(o options) *broker {
	br.t.Helper()
	br.close()
	return startBroker(br.t, o)
}

// persistent5 asks for a persistent MQTT 5 session.
func persistent5(expiry uint32) func(*paho.Connect) {
	return func(cp *paho.Connect) {
		cp.CleanStart = false
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
}

// waitReleased waits until no connection consumes the session queue of
// id: the server has torn the last one down.
func waitReleased(t *testing.T, b *engine.Broker, id string) {
	t.Helper()
	waitUnconsumed(t, b, "$mqtt/"+id)
}

// waitUnconsumed waits until queue has no consumer.
func waitUnconsumed(t *testing.T, b *engine.Broker, queue string) {
	t.Helper()
	waitUntil(t, "queue "+queue+" to lose its consumers", func() bool { return queueInfo(t, b, queue).Consumers == 0 })
}

func sessionRecords(t *testing.T, b *engine.Broker) []string {
	t.Helper()
	var keys []string
	if err := b.ScanKV("mqtt.session", func(k string, _ []byte) error {
		keys = append(keys, k)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

// MQTT 3.1.1 clean session 0: the QoS 1 subscription keeps what is
// published while the client is away, across a broker restart, and hands
// it over in order on reconnect with session present 1.
func TestPersistentSession311(t *testing.T) {
	o := options{store: memstore.New()}
	br := startBroker(t, o)
	c, present := br.dial3Session("dev", false)
	if present {
		t.Fatal("session present on first connect")
	}
	c.sub(t, "s/#", 1)
	c.Disconnect(0)
	waitReleased(t, br.b, "dev")
	p := br.dial3("pub")
	p.pub(t, "s/1", 1, "m1")
	p.pub(t, "s/2", 1, "m2")

	br = br.restart(o)
	p = br.dial3("pub2")
	for i := 3; i <= 5; i++ {
		p.pub(t, fmt.Sprintf("s/%d", i), 1, fmt.Sprintf("m%d", i))
	}
	c, present = br.dial3Session("dev", false)
	if !present {
		t.Fatal("session present 0 after restart")
	}
	var got []string
	for i := 1; i <= 5; i++ {
		m := c.next(t)
		got = append(got, fmt.Sprintf("%s/dup=%v/id=%d", m.Payload(), m.Duplicate(), m.MessageID()))
		if want := fmt.Sprintf("m%d", i); string(m.Payload()) != want || m.Qos() != 1 {
			t.Fatalf("got %q QoS %d, want %q (so far %v)", m.Payload(), m.Qos(), want, got)
		}
	}
	// The subscription itself survived: live messages flow too.
	p.pub(t, "s/6", 1, "m6")
	if m := c.next(t); string(m.Payload()) != "m6" {
		t.Fatalf("got %q", m.Payload())
	}
	if q, err := br.b.QueueInfo("$mqtt/dev"); err != nil || !q.Durable || q.Policy.DeadLetterQueue != mqtt.SessionDLQ ||
		q.Policy.Overflow != engine.OverflowDeadLetter || q.Policy.MaxLength != 100000 {
		t.Fatalf("session queue %+v, %v", q, err)
	}
	// Clean session 1 discards it.
	c.Disconnect(0)
	_, present = br.dial3Session("dev", true)
	if present {
		t.Fatal("clean session resumed the old one")
	}
	if _, err := br.b.QueueInfo("$mqtt/dev"); !errors.Is(err, engine.ErrNoQueue) {
		t.Fatalf("session queue still there: %v", err)
	}
	if keys := sessionRecords(t, br.b); len(keys) != 0 {
		t.Fatalf("session records left: %v", keys)
	}
}

// MQTT 5: the backlog comes back within the client's Receive Maximum and
// in order; CONNACK says session present and the capped expiry.
func TestPersistentSession5ReceiveMaximum(t *testing.T) {
	o := options{store: memstore.New(), cfg: func(c *mqtt.Config) { c.SessionExpiryMax = time.Hour }}
	br := startBroker(t, o)
	props := packets.Properties{SessionExpiryInterval: 7200, SessionExpiryIntervalFlag: true, ReceiveMaximum: 2}
	r, ack := br.dialRawClean("dev", 5, false, props)
	if ack.SessionPresent || !ack.Properties.SessionExpiryIntervalFlag || ack.Properties.SessionExpiryInterval != 3600 {
		t.Fatalf("CONNACK %+v", ack)
	}
	r.subscribe(1, "r/#", 1)
	r.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}})
	waitReleased(t, br.b, "dev")
	p := br.dial5("pub")
	for i := range 6 {
		if _, err := p.Publish(ctx(t), &paho.Publish{Topic: "r/x", QoS: 1, Payload: []byte{byte('a' + i)}}); err != nil {
			t.Fatal(err)
		}
	}
	br = br.restart(o)
	r, ack = br.dialRawClean("dev", 5, false, props)
	if !ack.SessionPresent {
		t.Fatalf("CONNACK %+v", ack)
	}
	var got []byte
	for len(got) < 6 {
		pk := r.read()
		if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos != 1 {
			t.Fatalf("got %+v", pk)
		}
		got = append(got, pk.Payload...)
		// Never more than Receive Maximum unacked: the engine holds the
		// rest.
		if q, err := br.b.QueueInfo("$mqtt/dev"); err != nil || q.Unacked > 2 {
			t.Fatalf("queue %+v, %v", q, err)
		}
		r.puback(pk.PacketID)
	}
	if string(got) != "abcdef" {
		t.Fatalf("got %q, want abcdef in order", got)
	}
}

// Session takeover: a second connection with the same client id gets the
// session (present 1) and the first is disconnected (0x8E).
func TestSessionTakeover(t *testing.T) {
	br := startBroker(t, options{})
	props := packets.Properties{SessionExpiryInterval: 60, SessionExpiryIntervalFlag: true}
	r1, _ := br.dialRawClean("dev", 5, false, props)
	r1.subscribe(1, "t", 1)
	r2, ack := br.dialRawClean("dev", 5, false, props)
	if !ack.SessionPresent {
		t.Fatal("taken-over session not present")
	}
	if pk := r1.read(); pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != 0x8E {
		t.Fatalf("old connection got %+v", pk)
	}
	p := br.dial5("pub")
	if _, err := p.Publish(ctx(t), &paho.Publish{Topic: "t", QoS: 1, Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if pk := r2.read(); pk.FixedHeader.Type != packets.Publish || string(pk.Payload) != "x" {
		t.Fatalf("got %+v", pk)
	}
}

// Session expiry: a session left before a restart expires on the clock
// after it (timer), and one whose expiry passed while the broker was down
// is deleted at startup. Either way its queue and record go.
func TestSessionExpiry(t *testing.T) {
	clk := engine.NewFakeClock(time.Unix(1_000_000, 0))
	o := options{store: memstore.New(), cfg: func(c *mqtt.Config) { c.Clock = clk }}
	br := startBroker(t, o)
	for _, id := range []string{"a", "b"} {
		c := br.dial5(id, persistent5(10))
		c.sub(t, "e", 1)
		if err := c.Disconnect(&paho.Disconnect{}); err != nil {
			t.Fatal(err)
		}
	}
	br = br.restart(o)
	if keys := sessionRecords(t, br.b); len(keys) != 2 {
		t.Fatalf("records %v", keys)
	}
	// "b" comes back before expiry and leaves again with expiry 100.
	b := br.dial5("b", persistent5(100))
	if !b.Connack.SessionPresent {
		t.Fatal("b not present")
	}
	if err := b.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	br = br.restart(o) // b's record now says left at the clock's time
	clk.Advance(11 * time.Second)
	if _, err := br.b.QueueInfo("$mqtt/a"); !errors.Is(err, engine.ErrNoQueue) {
		t.Fatalf("expired session queue still there: %v", err)
	}
	if keys := sessionRecords(t, br.b); len(keys) != 1 || keys[0] != "b" {
		t.Fatalf("records %v", keys)
	}
	br.close()
	clk.Advance(200 * time.Second)
	br = startBroker(t, o)
	if _, err := br.b.QueueInfo("$mqtt/b"); !errors.Is(err, engine.ErrNoQueue) {
		t.Fatalf("expired session queue still there: %v", err)
	}
	if keys := sessionRecords(t, br.b); len(keys) != 0 {
		t.Fatalf("records %v", keys)
	}
	if c := br.dial5("a", persistent5(10)); c.Connack.SessionPresent {
		t.Fatal("expired session present")
	}
}

// An MQTT 5 DISCONNECT may end the session (expiry 0); Clean Start
// discards one.
func TestSessionEndsOnDisconnectExpiryZero(t *testing.T) {
	br := startBroker(t, options{})
	props := packets.Properties{SessionExpiryInterval: 60, SessionExpiryIntervalFlag: true}
	r, _ := br.dialRawClean("dev", 5, false, props)
	r.subscribe(1, "z", 1)
	r.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Disconnect},
		Properties:  packets.Properties{SessionExpiryIntervalFlag: true},
	})
	if pk, err := r.tryRead(); err == nil {
		t.Fatalf("got %+v, want the connection closed", pk)
	}
	// The server read the DISCONNECT before it closed the connection.
	c := br.dial5("dev", persistent5(60))
	if c.Connack.SessionPresent {
		t.Fatal("session survived DISCONNECT with expiry 0")
	}
	c.sub(t, "z", 1)
	c = br.dial5("dev", func(cp *paho.Connect) {
		persistent5(60)(cp)
		cp.CleanStart = true
	})
	if c.Connack.SessionPresent {
		t.Fatal("clean start resumed a session")
	}
}

// A persistent session's queue past its max_length dead-letters its
// oldest messages into mqtt.dlq.
func TestSessionOverflowDeadLetters(t *testing.T) {
	br := startBroker(t, options{cfg: func(c *mqtt.Config) { c.SessionQueueMaxLength = 2 }})
	c, _ := br.dial3Session("dev", false)
	c.sub(t, "o", 1)
	c.Disconnect(0)
	waitReleased(t, br.b, "dev")
	p := br.dial3("pub")
	for _, m := range []string{"1", "2", "3"} {
		p.pub(t, "o", 1, m)
	}
	q, err := br.b.QueueInfo(mqtt.SessionDLQ)
	if err != nil || q.Messages != 1 {
		t.Fatalf("dlq %+v, %v", q, err)
	}
	c, present := br.dial3Session("dev", false)
	if !present {
		t.Fatal("not present")
	}
	for _, want := range []string{"2", "3"} {
		if m := c.next(t); string(m.Payload()) != want {
			t.Fatalf("got %q, want %q", m.Payload(), want)
		}
	}
}

// Takeover works for clean sessions too, however many times in a row.
func TestCleanSessionTakeoverRepeated(t *testing.T) {
	br := startBroker(t, options{})
	prev, _ := br.dialRaw("x", 5, packets.Properties{})
	for range 3 {
		next, ack := br.dialRaw("x", 5, packets.Properties{})
		if ack.SessionPresent {
			t.Fatal("clean session present")
		}
		if pk := prev.read(); pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != 0x8E {
			t.Fatalf("old connection got %+v", pk)
		}
		prev = next
	}
}
