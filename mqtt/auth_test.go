package mqtt_test

import (
	"io"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/mqtt"
	"github.com/tandem-mq/tandem/protocol"
	"golang.org/x/crypto/bcrypt"
)

// authBroker starts a broker with users alice (password "pw", her own
// sensor topics and queue jobs) and empty (an empty password, no rules),
// and no anonymous access.
func authBroker(t *testing.T) *broker {
	t.Helper()
	hash := func(p string) []byte {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost) // fast for tests
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	rules, err := protocol.ParseRules(
		[]string{"sensors/%u/#", "queue:jobs", "status/%c"},
		[]string{"sensors/+/temp", "queue:jobs"})
	if err != nil {
		t.Fatal(err)
	}
	a, err := protocol.NewAuthenticator([]protocol.User{
		{Name: "alice", Hash: hash("pw"), Rules: rules},
		{Name: "empty", Hash: hash("")},
	}, protocol.AnonymousNone, nil)
	if err != nil {
		t.Fatal(err)
	}
	return startBroker(t, options{cfg: func(c *mqtt.Config) { c.Auth = a }})
}

func login(user, pass string) func(*packets.Packet) {
	return func(pk *packets.Packet) {
		pk.Connect.UsernameFlag, pk.Connect.Username = user != "", []byte(user)
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(pass)
	}
}

// CONNECT refusals carry the version's code: a wrong password 0x86
// (3.1.1: 0x04), no user where anonymous access is off 0x87 (3.1.1: 0x05);
// a zero-length password is a password (mochi alone refuses it).
func TestConnectAuthentication(t *testing.T) {
	br := authBroker(t)
	for _, tc := range []struct {
		name     string
		v        byte
		mod      func(*packets.Packet)
		wantCode byte
	}{
		{"v5 wrong password", 5, login("alice", "nope"), 0x86},
		{"v311 wrong password", 4, login("alice", "nope"), 0x04},
		{"v5 anonymous", 5, nil, 0x87},
		{"v311 anonymous", 4, nil, 0x05},
		{"v5 right password", 5, login("alice", "pw"), 0},
		{"v311 empty password", 4, login("empty", ""), 0},
	} {
		_, ack, err := br.tryConnect("c-"+tc.name, tc.v, tc.mod)
		if err != nil || ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != tc.wantCode {
			t.Errorf("%s: got %+v (%v), want CONNACK %#x", tc.name, ack.FixedHeader, err, tc.wantCode)
		}
	}
	// A will on a topic the user may not publish to refuses the CONNECT.
	_, ack, err := br.tryConnect("will", 5, func(pk *packets.Packet) {
		login("alice", "pw")(pk)
		pk.Connect.WillFlag, pk.Connect.WillTopic, pk.Connect.WillPayload = true, "sensors/bob/status", []byte("x")
	})
	if err != nil || ack.ReasonCode != 0x87 {
		t.Errorf("will outside the rules: got %+v (%v), want CONNACK 0x87", ack, err)
	}
}

// Publish and subscribe rules: refused subscriptions get 0x87 in SUBACK,
// a refused QoS 1 publish PUBACK 0x87 and is not delivered or stored; %c
// is the client id. MQTT 3.1.1 has no refusal code: the connection closes.
func TestPermissionsMQTT(t *testing.T) {
	br := authBroker(t)
	if err := br.b.DeclareQueue("other", engine.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	c := br.dial5("dev1", func(cp *paho.Connect) {
		cp.UsernameFlag, cp.Username = true, "alice"
		cp.PasswordFlag, cp.Password = true, []byte("pw")
	})
	sa, err := c.Subscribe(ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "sensors/+/temp", QoS: 1},
		{Topic: "#", QoS: 1},
		{Topic: "$queue/jobs", QoS: 1},
		{Topic: "$queue/other", QoS: 1},
		{Topic: "$share/g/sensors/#", QoS: 1},
	}})
	if sa == nil {
		t.Fatal(err)
	}
	if want := []byte{1, 0x87, 1, 0x87, 0x87}; string(sa.Reasons) != string(want) {
		t.Fatalf("SUBACK %#x, want %#x", sa.Reasons, want)
	}
	for _, p := range []struct {
		topic string
		code  byte
	}{
		{"sensors/bob/temp", 0x87},
		{"$queue/other", 0x87},
		{"status/dev2", 0x87},
		{"status/dev1", 0},
		{"$queue/jobs", 0},
		{"sensors/alice/temp", 0},
	} {
		r, err := c.Publish(ctx(t), &paho.Publish{Topic: p.topic, QoS: 1, Payload: []byte(p.topic)})
		if r == nil {
			t.Fatalf("publish %s: %v", p.topic, err)
		}
		if r.ReasonCode != p.code {
			t.Errorf("publish %s: PUBACK %#x, want %#x", p.topic, r.ReasonCode, p.code)
		}
	}
	// The two allowed messages the subscriptions match arrive, and nothing
	// else: the refused sensors/bob/temp, published before them into the
	// same session queue, would have come first.
	got := map[string]bool{}
	for range 2 {
		got[c.next(t).Topic] = true
	}
	if !got["sensors/alice/temp"] || !got["$queue/jobs"] {
		t.Fatalf("got %v, want sensors/alice/temp and $queue/jobs", got)
	}
	if q := queueInfo(t, br.b, "other"); q.Messages != 0 {
		t.Fatalf("a refused publish was stored in queue other")
	}

	r, _ := br.dialConnect("v3", 4, login("alice", "pw"))
	r.publish("sensors/bob/temp", 1, 1, "x")
	if pk, err := r.tryRead(); err != io.EOF {
		t.Fatalf("MQTT 3.1.1 refused publish: got %+v (%v), want the connection closed", pk.FixedHeader, err)
	}
}

// Connection limits answer at CONNECT: over the limit MQTT 5 gets CONNACK
// 0x97, MQTT 3.1.1 0x03; a slot comes back when its connection ends. (The
// per-address and rate limits, which spare loopback, are tested in
// protocol; their refusal is 0x97 and 0x9F.)
func TestConnectionLimits(t *testing.T) {
	lim := protocol.NewConnLimiter(protocol.ConnLimits{MaxConnections: 1}, nil)
	br := startBroker(t, options{cfg: func(c *mqtt.Config) { c.Limiter = lim }})
	first, _ := br.dialRaw("first", 5, packets.Properties{})
	for v, want := range map[byte]byte{5: 0x97, 4: 0x03} {
		_, ack, err := br.tryConnect("second", v, nil)
		if err != nil || ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != want {
			t.Fatalf("version %d over the limit: %+v (%v), want CONNACK %#x", v, ack.FixedHeader, err, want)
		}
	}
	first.nc.Close()
	waitUntil(t, "the first connection's slot to come back", func() bool { return lim.Open() == 0 })
	br.dialRaw("third", 5, packets.Properties{})
}
