package stomp_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/tandem-mq/tandem/engine"
)

// fill sends n messages "0".."n-1" to queue over a fresh connection.
func (br *broker) fill(queue string, n int) {
	br.t.Helper()
	p := br.dial()
	for i := 0; i < n; i++ {
		if err := p.Send("/queue/"+queue, "", []byte(fmt.Sprint(i)), gostomp.SendOpt.Receipt); err != nil {
			br.t.Fatal(err)
		}
	}
}

// STOMP 1.2 §SUBSCRIBE ack header, auto: "the client does not need to send
// the server ACK frames": delivered messages leave the queue.
func TestAckAuto(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	br.fill("auto", 3)
	c := br.dial()
	sub, err := c.Subscribe("/queue/auto", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		m := recv(t, sub)
		if string(m.Body) != fmt.Sprint(i) {
			t.Fatalf("got %q", m.Body)
		}
		if _, ok := m.Header.Contains("ack"); ok {
			t.Fatalf("ack:auto MESSAGE has an ack header: %v", m.Header)
		}
	}
	br.waitMessages("auto", 0)
}

// STOMP 1.2 §SUBSCRIBE ack header, client: "the ACK is treated as a
// cumulative acknowledgment": acking the 3rd of 3 acks all three.
func TestAckClientCumulative(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	br.fill("cumul", 3)
	c := br.dial()
	sub, err := c.Subscribe("/queue/cumul", gostomp.AckClient)
	if err != nil {
		t.Fatal(err)
	}
	var last *gostomp.Message
	for i := 0; i < 3; i++ {
		last = recv(t, sub)
	}
	if qi := br.queueInfo("cumul"); qi.Unacked != 3 {
		t.Fatalf("unacked %d before the ACK", qi.Unacked)
	}
	if err := c.Ack(last); err != nil {
		t.Fatal(err)
	}
	br.waitMessages("cumul", 0)
}

// STOMP 1.2 §SUBSCRIBE ack header, client-individual: "the ACK is not
// cumulative"; what stays unacked returns to the queue when the
// connection closes, and another consumer gets it with redelivered:true
// (DESIGN.md "Acks").
func TestAckClientIndividualAndReturnOnClose(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	br.fill("indiv", 3)
	c, err := gostomp.Dial("tcp", br.addr, gostomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := c.Subscribe("/queue/indiv", gostomp.AckClientIndividual)
	if err != nil {
		t.Fatal(err)
	}
	var ms []*gostomp.Message
	for i := 0; i < 3; i++ {
		ms = append(ms, recv(t, sub))
	}
	if err := c.Ack(ms[2]); err != nil {
		t.Fatal(err)
	}
	br.waitMessages("indiv", 2)
	if qi := br.queueInfo("indiv"); qi.Unacked != 2 {
		t.Fatalf("unacked %d, want 2", qi.Unacked)
	}
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
	c2 := br.dial()
	sub2, err := c2.Subscribe("/queue/indiv", gostomp.AckClientIndividual)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		m := recv(t, sub2)
		if string(m.Body) != fmt.Sprint(i) || m.Header.Get("redelivered") != "true" || m.Header.Get("x-delivery-count") != "2" {
			t.Fatalf("got %q %v", m.Body, m.Header)
		}
		if err := c2.Ack(m); err != nil {
			t.Fatal(err)
		}
	}
	br.waitMessages("indiv", 0)
}

// DESIGN.md "Message properties": deliveries carry message-id,
// destination, subscription, ack (1.2, non-auto), redelivered and
// x-delivery-count.
func TestDeliveryHeaders(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	br.fill("hdrs", 1)
	c := br.dial()
	sub, err := c.Subscribe("/queue/hdrs", gostomp.AckClientIndividual, gostomp.SubscribeOpt.Id("my-sub"))
	if err != nil {
		t.Fatal(err)
	}
	m := recv(t, sub)
	for k, want := range map[string]string{
		"subscription": "my-sub", "destination": "/queue/hdrs", "redelivered": "false", "x-delivery-count": "1",
	} {
		if got := m.Header.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if m.Header.Get("message-id") == "" || m.Header.Get("ack") == "" {
		t.Errorf("no message-id or ack: %v", m.Header)
	}
}

// DESIGN.md "Redelivery" and "Dead letters"; STOMP 1.2 §NACK: a NACKed
// message comes back after the redelivery delay with its count raised;
// past max_deliveries it lands in <queue>.dlq with the reason headers.
func TestNackRedeliveryThenDeadLetter(t *testing.T) {
	br := startBroker(t, engine.Config{Default: engine.Policy{
		RedeliveryDelay: 50 * time.Millisecond, RedeliveryMaxDelay: 50 * time.Millisecond, MaxDeliveries: 3,
	}}, nil)
	br.fill("nack", 1)
	c := br.dial()
	sub, err := c.Subscribe("/queue/nack", gostomp.AckClientIndividual)
	if err != nil {
		t.Fatal(err)
	}
	var nackedAt time.Time
	for i := 1; i <= 3; i++ {
		m := recv(t, sub)
		if i > 1 && time.Since(nackedAt) < 40*time.Millisecond {
			t.Errorf("attempt %d came back after %v, before the redelivery delay", i, time.Since(nackedAt))
		}
		if got := m.Header.Get("x-delivery-count"); got != fmt.Sprint(i) {
			t.Fatalf("attempt %d: x-delivery-count %q", i, got)
		}
		if got := m.Header.Get("redelivered"); got != fmt.Sprint(i > 1) {
			t.Fatalf("attempt %d: redelivered %q", i, got)
		}
		nackedAt = time.Now()
		if err := c.Nack(m); err != nil {
			t.Fatal(err)
		}
	}
	br.waitMessages("nack", 0)
	dlq, err := c.Subscribe("/queue/nack.dlq", gostomp.AckClientIndividual)
	if err != nil {
		t.Fatal(err)
	}
	m := recv(t, dlq)
	if string(m.Body) != "0" || m.Header.Get("x-death-reason") != engine.DeathMaxDeliveries ||
		m.Header.Get("x-original-destination") == "" || m.Header.Get("x-death-time") == "" {
		t.Fatalf("dead letter %q %v", m.Body, m.Header)
	}
	if !strings.HasSuffix(m.Header.Get("x-original-destination"), "nack") {
		t.Errorf("x-original-destination %q", m.Header.Get("x-original-destination"))
	}
}

// DESIGN.md "Flow control": prefetch-count (RabbitMQ) and
// activemq.prefetchSize (ActiveMQ) bound unacked messages per
// subscription: with 2 and 5 queued only 2 arrive, and each ACK lets one
// more through. The server queues a SUBSCRIBE's deliveries before its
// RECEIPT, and an ACK's before the ACK's, so counting frames before each
// RECEIPT is exact.
func TestPrefetchBoundsUnacked(t *testing.T) {
	for _, h := range []string{"prefetch-count", "activemq.prefetchSize"} {
		t.Run(h, func(t *testing.T) {
			br := startBroker(t, engine.Config{}, nil)
			br.fill("pf", 5)
			rc := br.rawConnect("accept-version:1.2", "host:x")
			rc.send("SUBSCRIBE", nil, "destination:/queue/pf", "id:s", "ack:client-individual", h+":2", "receipt:sub")
			got := rc.readUntil("RECEIPT")
			if len(got) != 2 {
				t.Fatalf("%d messages before the SUBSCRIBE receipt, want 2: %v", len(got), bodies(got))
			}
			if qi := br.queueInfo("pf"); qi.Unacked != 2 {
				t.Fatalf("unacked %d", qi.Unacked)
			}
			var all []string
			for len(got) > 0 {
				m := got[0]
				got = got[1:]
				all = append(all, string(m.Body))
				rc.send("ACK", nil, "id:"+m.Get("ack"), "receipt:a"+string(m.Body))
				more := rc.readUntil("RECEIPT")
				if len(more) > 1 {
					t.Fatalf("an ACK let %d through", len(more))
				}
				got = append(got, more...)
			}
			if strings.Join(all, ",") != "0,1,2,3,4" {
				t.Fatalf("got %v", all)
			}
		})
	}
}

// DESIGN.md "Limits": overflow reject-publish refuses the publish, and the
// publisher gets a STOMP ERROR that says why.
func TestRejectPublishError(t *testing.T) {
	br := startBroker(t, engine.Config{Default: engine.Policy{MaxLength: 1, Overflow: engine.OverflowRejectPublish}}, nil)
	c, err := gostomp.Dial("tcp", br.addr, gostomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send("/queue/full", "", []byte("1"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	err = c.Send("/queue/full", "", []byte("2"), gostomp.SendOpt.Receipt)
	if err == nil || !strings.Contains(err.Error(), "queue full") {
		t.Fatalf("second SEND: %v", err)
	}
	rc := br.rawConnect("accept-version:1.2", "host:x")
	rc.send("SEND", []byte("3"), "destination:/queue/full", "receipt:r3")
	f := rc.expectError("queue full")
	if f.Get("receipt-id") != "r3" {
		t.Errorf("receipt-id %q", f.Get("receipt-id"))
	}
	rc.expectClosed(5 * time.Second)
	br.waitMessages("full", 1)
}

// The server never delivers a message twice to one subscriber: many
// messages, small credit, concurrent producers.
func TestNoDuplicateDeliveries(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	c := br.dial()
	sub, err := c.Subscribe("/queue/dups", gostomp.AckClient, gostomp.SubscribeOpt.Header("prefetch-count", "7"))
	if err != nil {
		t.Fatal(err)
	}
	topic, err := c.Subscribe("/topic/dups.#", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	barrier(t, c)
	const producers, each = 4, 50
	errs := make(chan error, producers)
	for p := 0; p < producers; p++ {
		go func() {
			pc, err := gostomp.Dial("tcp", br.addr, gostomp.ConnOpt.HeartBeat(0, 0))
			if err != nil {
				errs <- err
				return
			}
			defer pc.Disconnect()
			for i := 0; i < each; i++ {
				body := []byte(fmt.Sprintf("%d-%d", p, i))
				if err := pc.Send("/queue/dups", "", body); err != nil {
					errs <- err
					return
				}
				if err := pc.Send("/topic/dups.x", "", body); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	seenQ, seenT := map[string]bool{}, map[string]bool{}
	for len(seenQ) < producers*each || len(seenT) < producers*each {
		select {
		case m := <-sub.C:
			if m.Err != nil {
				t.Fatal(m.Err)
			}
			if seenQ[string(m.Body)] {
				t.Fatalf("queue message %s delivered twice", m.Body)
			}
			seenQ[string(m.Body)] = true
			if len(seenQ)%5 == 0 || len(seenQ) == producers*each {
				if err := c.Ack(m); err != nil {
					t.Fatal(err)
				}
			}
		case m := <-topic.C:
			if m.Err != nil {
				t.Fatal(m.Err)
			}
			if seenT[string(m.Body)] {
				t.Fatalf("topic message %s delivered twice", m.Body)
			}
			seenT[string(m.Body)] = true
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("stalled at %d queue, %d topic messages", len(seenQ), len(seenT))
		}
	}
	br.waitMessages("dups", 0)
}

// STOMP 1.2 §SUBSCRIBE ack:auto, §UNSUBSCRIBE: a message the client has
// received on an ack:auto subscription stays consumed when the client
// unsubscribes right away (it used to be acked only after the write, so
// an UNSUBSCRIBE in between returned it to the queue for a second
// delivery).
func TestAckAutoThenUnsubscribeKeepsMessageConsumed(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	rc := br.rawConnect("accept-version:1.2", "host:x")
	for i := 0; i < 50; i++ {
		rc.send("SEND", []byte("m"), "destination:/queue/au", "receipt:s")
		rc.readUntil("RECEIPT")
		rc.send("SUBSCRIBE", nil, "destination:/queue/au", "id:a", "ack:auto")
		if f := rc.read(); f.Command != "MESSAGE" {
			t.Fatalf("got %s %v", f.Command, f.Headers)
		}
		rc.send("UNSUBSCRIBE", nil, "id:a", "receipt:u")
		rc.readUntil("RECEIPT")
		if qi := br.queueInfo("au"); qi.Messages != 0 {
			t.Fatalf("round %d: received message back in the queue: %+v", i, qi)
		}
	}
}

// A message property named like a header the broker sets itself (an MQTT
// 5 user property "ack" or "message-id", published straight to the
// engine here) is not passed on: a topic delivery, which carries no ack,
// redelivered or x-delivery-count of its own, must not seem to.
func TestPropertiesCannotSpoofBrokerHeaders(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	c := br.dial()
	sub, err := c.Subscribe("/topic/spoof", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send("/topic/other", "", []byte("sync"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err) // the SUBSCRIBE is in place
	}
	var props []engine.Property
	for _, k := range []string{"message-id", "subscription", "ack", "redelivered", "x-delivery-count", "destination", "content-length", "unit"} {
		props = append(props, engine.Property{Key: k, Value: "spoof"})
	}
	if err := br.b.Publish(&engine.Message{Topic: "spoof", Body: []byte("x"), Props: props}); err != nil {
		t.Fatal(err)
	}
	m := recv(t, sub)
	for _, k := range []string{"message-id", "subscription", "destination", "content-length"} {
		if vs := m.Header.GetAll(k); len(vs) != 1 || vs[0] == "spoof" {
			t.Errorf("%s: %q, want only the broker's", k, vs)
		}
	}
	for _, k := range []string{"ack", "redelivered", "x-delivery-count"} {
		if vs := m.Header.GetAll(k); len(vs) != 0 {
			t.Errorf("%s: %q, want none on an auto-ack topic delivery", k, vs)
		}
	}
	if m.Header.Get("unit") != "spoof" {
		t.Errorf("an ordinary property was dropped: %v", m.Header)
	}
}
