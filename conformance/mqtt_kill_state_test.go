package conformance

import (
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
)

// TestKill9RetainedAndWillsSurvive: retained messages and wills live in
// the same Pebble database as the queues and survive SIGKILL of the
// broker. A retained message whose PUBACK arrived is there after the
// restart, and so is a retained will whose CONNACK arrived: its client was
// connected when the broker died without a DISCONNECT, so the will is
// published at the restart (docs/mqtt-design.md §10.2).
func TestKill9RetainedAndWillsSurvive(t *testing.T) {
	dir := t.TempDir()
	b := startTandem(t, dir)
	connect := func(id string, opts *pahov3.ClientOptions) pahov3.Client {
		t.Helper()
		c := pahov3.NewClient(opts.AddBroker("tcp://" + b.MQTT).SetClientID(id).SetProtocolVersion(4).SetAutoReconnect(false))
		if tok := c.Connect(); !tok.WaitTimeout(mqttWait) || tok.Error() != nil {
			t.Fatalf("%s: connect: %v", id, tok.Error())
		}
		return c
	}
	pub := connect("pub", pahov3.NewClientOptions())
	if tok := pub.Publish("state/door", 1, true, "open"); !tok.WaitTimeout(mqttWait) || tok.Error() != nil {
		t.Fatalf("retained publish: %v", tok.Error())
	}
	pub.Disconnect(0)
	dev := connect("dev", pahov3.NewClientOptions().SetBinaryWill("state/dev", []byte("offline"), 1, true))
	defer dev.Disconnect(0)

	b.Kill(t)
	b = startTandem(t, dir)

	got := make(chan pahov3.Message, 10)
	sub := connect("sub", pahov3.NewClientOptions())
	defer sub.Disconnect(0)
	if tok := sub.Subscribe("state/#", 1, func(_ pahov3.Client, m pahov3.Message) { got <- m }); !tok.WaitTimeout(mqttWait) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	want := map[string]string{"state/door": "open", "state/dev": "offline"}
	deadline := time.After(mqttWait)
	for len(want) > 0 {
		select {
		case m := <-got:
			if w, ok := want[m.Topic()]; !ok || string(m.Payload()) != w || !m.Retained() {
				t.Fatalf("after the restart got %s %q (retained %v)", m.Topic(), m.Payload(), m.Retained())
			}
			delete(want, m.Topic())
		case <-deadline:
			t.Fatalf("after the restart, still missing %v", want)
		}
	}
}
