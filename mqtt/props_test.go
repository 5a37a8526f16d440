package mqtt_test

import (
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/engine"
)

// chanSink collects engine deliveries.
type chanSink chan engine.Delivery

func (c chanSink) Deliver(d engine.Delivery) { c <- d }

func recvEngine(t *testing.T, c chanSink) *engine.Message {
	t.Helper()
	select {
	case d := <-c:
		return d.Msg
	case <-time.After(waitTimeout):
		t.Fatal("no engine delivery")
	}
	return nil
}

// MQTT 5 properties map onto the engine's (STOMP) names and back: an MQTT
// 5 subscriber gets them as published, an engine subscriber (what the
// STOMP adapter delivers from) sees content-type, reply-to in STOMP form,
// correlation-id, expires and the user properties in order.
func TestPropertiesMQTT5(t *testing.T) {
	br := startBroker(t, options{})
	sub := br.dial5("sub")
	sub.sub(t, "v1.2/temp", 1)
	eng := make(chanSink, 10)
	if _, err := br.b.Subscribe("v1.2/temp", eng); err != nil {
		t.Fatal(err)
	}
	pub := br.dial5("pub")
	expiry := uint32(3600)
	pf := byte(1)
	body := []byte{0, 1, 2, 0xff}
	props := &paho.PublishProperties{
		ContentType:     "application/json",
		ResponseTopic:   "replies/v1.2",
		CorrelationData: []byte("corr\x00\xff"),
		MessageExpiry:   &expiry,
		PayloadFormat:   &pf,
		User:            paho.UserProperties{{Key: "k", Value: "1"}, {Key: "k", Value: "2"}, {Key: "other", Value: "x"}},
	}
	before := time.Now()
	if _, err := pub.Publish(ctx(t), &paho.Publish{Topic: "v1.2/temp", QoS: 1, Payload: body, Properties: props}); err != nil {
		t.Fatal(err)
	}

	m := recvEngine(t, eng)
	if string(m.Body) != string(body) || m.Origin != "mqtt:pub" || m.QoS != 1 {
		t.Fatalf("engine message %+v", m)
	}
	want := map[string]string{
		"content-type":        "application/json",
		"reply-to":            "/topic/replies.v1/2",
		"correlation-id":      "corr\x00\xff",
		"mqtt-payload-format": "1",
	}
	for k, v := range want {
		if got, _ := m.Prop(k); got != v {
			t.Errorf("engine %s = %q, want %q", k, got, v)
		}
	}
	var users []string
	for _, p := range m.Props {
		if p.Key == "k" || p.Key == "other" {
			users = append(users, p.Key+"="+p.Value)
		}
	}
	if !slices.Equal(users, []string{"k=1", "k=2", "other=x"}) {
		t.Errorf("user properties %v", users)
	}
	exp, _ := m.Prop("expires")
	ms, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || time.UnixMilli(ms).Before(before.Add(time.Hour-time.Second)) || m.ExpiresAt/1e6 != ms {
		t.Errorf("expires %q, ExpiresAt %d", exp, m.ExpiresAt)
	}

	got := sub.next(t)
	p := got.Properties
	if string(got.Payload) != string(body) || p.ContentType != "application/json" || p.ResponseTopic != "replies/v1.2" ||
		string(p.CorrelationData) != "corr\x00\xff" || p.PayloadFormat == nil || *p.PayloadFormat != 1 ||
		p.MessageExpiry == nil || *p.MessageExpiry > expiry || *p.MessageExpiry < expiry-5 {
		t.Fatalf("MQTT 5 delivery %+v", p)
	}
	if len(p.User) != 3 || p.User[0] != (paho.UserProperty{Key: "k", Value: "1"}) || p.User[1] != (paho.UserProperty{Key: "k", Value: "2"}) {
		t.Fatalf("user properties %+v", p.User)
	}
}

// A message published the way the STOMP adapter publishes (headers as
// properties, reply-to in STOMP form, expiry set by the expires header)
// reaches MQTT 5 with the mapped properties; MQTT 3.1.1 gets the body.
func TestPropertiesFromSTOMPForm(t *testing.T) {
	br := startBroker(t, options{})
	s5 := br.dial5("s5")
	s5.sub(t, "orders/+", 1)
	s3 := br.dial3("s3")
	s3.sub(t, "orders/#", 1)
	at := time.Now().Add(time.Minute)
	m := &engine.Message{
		Topic: "orders/new", QoS: 1, Body: []byte("{}"), ExpiresAt: at.UnixNano(),
		Props: []engine.Property{
			{Key: "content-type", Value: "text/plain"},
			{Key: "reply-to", Value: "/queue/$tmp/c1/r"},
			{Key: "correlation-id", Value: "42"},
			{Key: "expires", Value: strconv.FormatInt(at.UnixMilli(), 10)},
			{Key: "priority", Value: "9"},
		},
	}
	if err := br.b.Publish(m); err != nil {
		t.Fatal(err)
	}
	got := s5.next(t)
	p := got.Properties
	if p.ContentType != "text/plain" || p.ResponseTopic != "$queue/$tmp/c1/r" || string(p.CorrelationData) != "42" ||
		p.MessageExpiry == nil || *p.MessageExpiry < 55 || *p.MessageExpiry > 60 {
		t.Fatalf("properties %+v", p)
	}
	if len(p.User) != 1 || p.User[0] != (paho.UserProperty{Key: "priority", Value: "9"}) {
		t.Fatalf("user properties %+v", p.User)
	}
	if g := s3.next(t); g.Topic() != "orders/new" || string(g.Payload()) != "{}" {
		t.Fatalf("v3 got %s %q", g.Topic(), g.Payload())
	}
	// A /topic/ reply-to maps back to the MQTT topic.
	m2 := &engine.Message{Topic: "orders/new", QoS: 0, Props: []engine.Property{{Key: "reply-to", Value: "/topic/replies.v1/2"}}}
	if err := br.b.Publish(m2); err != nil {
		t.Fatal(err)
	}
	if got := s5.next(t); got.Properties.ResponseTopic != "replies/v1.2" {
		t.Fatalf("response topic %q", got.Properties.ResponseTopic)
	}
}

// No Local: a client's own publishes do not come back on a No Local
// subscription [MQTT-3.8.3-3], and do on a plain one.
func TestNoLocal(t *testing.T) {
	br := startBroker(t, options{})
	c := br.dial5("me")
	sa, err := c.Subscribe(ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "nl/#", QoS: 1, NoLocal: true}}})
	if err != nil || sa.Reasons[0] != 1 {
		t.Fatalf("%v %v", err, sa)
	}
	other := br.dial3("other")
	if _, err := c.Publish(ctx(t), &paho.Publish{Topic: "nl/mine", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	other.pub(t, "nl/theirs", 1, "")
	if m := c.next(t); m.Topic != "nl/theirs" {
		t.Fatalf("got %s: own message came back", m.Topic)
	}
}

// Subscription identifiers of every matching subscription are sent with
// the delivery [MQTT-3.3.4-4].
func TestSubscriptionIdentifiers(t *testing.T) {
	br := startBroker(t, options{})
	c := br.dial5("c")
	for i, f := range []string{"s/+", "s/#"} {
		id := i + 7
		sa, err := c.Subscribe(ctx(t), &paho.Subscribe{
			Properties:    &paho.SubscribeProperties{SubscriptionIdentifier: &id},
			Subscriptions: []paho.SubscribeOptions{{Topic: f, QoS: 1}},
		})
		if err != nil || sa.Reasons[0] != 1 {
			t.Fatalf("%v %v", err, sa)
		}
	}
	if err := br.b.Publish(&engine.Message{Topic: "s/x", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	// paho.golang keeps the first identifier only.
	if m := c.next(t); m.Properties.SubscriptionIdentifier == nil || (*m.Properties.SubscriptionIdentifier != 7 && *m.Properties.SubscriptionIdentifier != 8) {
		t.Fatalf("subscription identifier %v", m.Properties.SubscriptionIdentifier)
	}
}

// Close ends every connection and returns only once every goroutine the
// server started has ended: none of the mqtt package's frames is left on
// any goroutine's stack (mochi's idle per-client WriteLoop, signalled by
// mochi, is not ours to join).
func TestCloseJoinsGoroutines(t *testing.T) {
	br := startBroker(t, options{})
	s3 := br.dial3("s3")
	s3.sub(t, "x/#", 1)
	s5 := br.dial5("s5")
	s5.sub(t, "x/#", 0)
	_, _ = br.dialRaw("half", 5, packets.Properties{})
	pending := make(chan struct{})
	go func() {
		defer close(pending)
		// accepted but not yet CONNECTed
		if nc, err := net.Dial("tcp", br.addr); err == nil {
			defer nc.Close()
			buf := make([]byte, 1)
			_, _ = nc.Read(buf)
		}
	}()
	if err := br.b.Publish(&engine.Message{Topic: "x/y", QoS: 1}); err != nil {
		t.Fatal(err)
	}
	s3.next(t)
	s5.next(t)
	// the bare TCP connection is being accepted
	waitUntil(t, "4 connections", func() bool { return br.srv.Conns() >= 4 })
	if err := br.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if n := br.srv.Conns(); n != 0 {
		t.Fatalf("%d connections left", n)
	}
	// A goroutine that has called its WaitGroup's Done may still be on
	// its way out (returning); one that is blocked never gets out.
	deadline := time.Now().Add(waitTimeout)
	for left := ourGoroutines(); len(left) > 0; left = ourGoroutines() {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines left after Close:\n%s", strings.Join(left, "\n\n"))
		}
		runtime.Gosched()
	}
	<-pending
	select {
	case <-s5.Done():
	case <-time.After(waitTimeout):
		t.Fatal("MQTT 5 client not disconnected")
	}
}

// ourGoroutines returns the stacks of goroutines running mqtt package code.
func ourGoroutines() []string {
	buf := make([]byte, 1<<20)
	var out []string
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "tandem/mqtt.") {
			out = append(out, g)
		}
	}
	return out
}
