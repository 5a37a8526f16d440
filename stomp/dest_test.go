package stomp_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"
	"github.com/tandem-mq/tandem/engine"
)

// DESIGN.md "Names across protocols", queue jobs = /queue/jobs (competing
// consumers); STOMP 1.2 §SUBSCRIBE: two subscribers of one queue share its
// messages, each message reaching exactly one of them, once.
func TestQueueCompetingConsumers(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	c1, c2 := br.dial(), br.dial()
	s1, err := c1.Subscribe("/queue/work", gostomp.AckClientIndividual, gostomp.SubscribeOpt.Header("prefetch-count", "1"))
	if err != nil {
		t.Fatal(err)
	}
	s2, err := c2.Subscribe("/queue/work", gostomp.AckClientIndividual, gostomp.SubscribeOpt.Header("prefetch-count", "1"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two consumers", func() bool { return br.queueInfo("work").Consumers == 2 })
	p := br.dial()
	const n = 40
	for i := 0; i < n; i++ {
		if err := p.Send("/queue/work", "", []byte(fmt.Sprint(i)), gostomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]string{}
	per := map[string]int{}
	for len(seen) < n {
		var m *gostomp.Message
		var who string
		select {
		case m = <-s1.C:
			who = "c1"
		case m = <-s2.C:
			who = "c2"
		case <-time.After(5 * time.Second):
			t.Fatalf("got %d of %d", len(seen), n)
		}
		if m.Err != nil {
			t.Fatal(m.Err)
		}
		if prev, dup := seen[string(m.Body)]; dup {
			t.Fatalf("message %s delivered twice (%s and %s)", m.Body, prev, who)
		}
		seen[string(m.Body)] = who
		per[who]++
		if err := m.Conn.Ack(m); err != nil {
			t.Fatal(err)
		}
	}
	if per["c1"] == 0 || per["c2"] == 0 {
		t.Fatalf("not shared: %v", per)
	}
	br.waitMessages("work", 0)
}

// DESIGN.md "Names across protocols": topic a/b/c = /topic/a.b.c, filter
// a/+/# = /topic/a.*.#; every matching subscription gets a copy.
func TestTopicWildcards(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	c := br.dial()
	subs := map[string]*gostomp.Subscription{}
	for _, f := range []string{"/topic/a.*.c", "/topic/a.#", "/topic/a.b.c", "/topic/*.b.#"} {
		s, err := c.Subscribe(f, gostomp.AckAuto)
		if err != nil {
			t.Fatal(err)
		}
		subs[f] = s
	}
	barrier(t, c)
	for _, d := range []string{"/topic/a.b.c", "/topic/a.x.c", "/topic/a.b.d", "/topic/x.b", "/topic/a"} {
		if err := c.Send(d, "", []byte(d), gostomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string][]string{
		"/topic/a.*.c": {"/topic/a.b.c", "/topic/a.x.c"},
		"/topic/a.#":   {"/topic/a.b.c", "/topic/a.x.c", "/topic/a.b.d", "/topic/a"},
		"/topic/a.b.c": {"/topic/a.b.c"},
		"/topic/*.b.#": {"/topic/a.b.c", "/topic/a.b.d", "/topic/x.b"},
	}
	// The last publish matches every subscription but one: a marker to
	// know nothing else is coming.
	if err := c.Send("/topic/a.b.c", "", []byte("end"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	for f, exp := range want {
		var got []string
		for {
			m := recv(t, subs[f])
			if string(m.Body) == "end" && len(got) >= len(exp) {
				break
			}
			got = append(got, string(m.Body))
			if m.Destination != string(m.Body) {
				t.Errorf("%s: destination %q for message to %s", f, m.Destination, m.Body)
			}
		}
		if strings.Join(got, " ") != strings.Join(exp, " ") {
			t.Errorf("%s got %v, want %v", f, got, exp)
		}
	}
}

// topicSink collects engine topic deliveries.
type topicSink chan engine.Delivery

func (s topicSink) Deliver(d engine.Delivery) {
	select {
	case s <- d:
	default:
	}
}

// DESIGN.md "Names across protocols": engine topic v1.2/temp is STOMP
// /topic/v1/2.temp ('/' and '.' swap, so every name maps back), both ways.
func TestTopicNameMappingReversible(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	c := br.dial()
	sub, err := c.Subscribe("/topic/v1/2.temp", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	wild, err := c.Subscribe("/topic/v1/2.*", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	barrier(t, c)
	if err := br.b.Publish(&engine.Message{Topic: "v1.2/temp", Body: []byte("21.5")}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*gostomp.Subscription{sub, wild} {
		m := recv(t, s)
		if string(m.Body) != "21.5" || m.Destination != "/topic/v1/2.temp" {
			t.Fatalf("got %q on %q", m.Body, m.Destination)
		}
	}

	sink := make(topicSink, 4)
	ts, err := br.b.Subscribe("v1.2/+", sink)
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	if err := c.Send("/topic/v1/2.humidity", "", []byte("40"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-sink:
		if d.Msg.Topic != "v1.2/humidity" || string(d.Msg.Body) != "40" {
			t.Fatalf("engine got %q %q", d.Msg.Topic, d.Msg.Body)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("engine subscriber got nothing")
	}
}

// DESIGN.md "Names across protocols", temporary reply queue = /temp-queue/x
// (RabbitMQ's temp-queue): A sends with reply-to:/temp-queue/r, which the
// server rewrites to a queue only A reads; B replies there; A receives on
// the auto-subscription whose id is the temp-queue destination.
func TestTempQueueRequestReply(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	a, b := br.dial(), br.dial()
	svc, err := b.Subscribe("/queue/svc", gostomp.AckClientIndividual)
	if err != nil {
		t.Fatal(err)
	}
	// go-stomp's way to read an auto-subscription: a local channel under
	// the id "/temp-queue/r", no SUBSCRIBE sent.
	replies, err := a.Subscribe("/temp-queue/r", gostomp.AckAuto, gostomp.SubscribeOpt.Header("reply-to", "/temp-queue/r"))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Send("/queue/svc", "", []byte("ping"), gostomp.SendOpt.Receipt,
		gostomp.SendOpt.Header("reply-to", "/temp-queue/r"), gostomp.SendOpt.Header("correlation-id", "42")); err != nil {
		t.Fatal(err)
	}
	req := recv(t, svc)
	rt := req.Header.Get("reply-to")
	if !strings.HasPrefix(rt, "/queue/") || rt == "/temp-queue/r" {
		t.Fatalf("reply-to not rewritten: %q", rt)
	}
	if err := b.Send(rt, "", []byte("pong"), gostomp.SendOpt.Receipt, gostomp.SendOpt.Header("correlation-id", req.Header.Get("correlation-id"))); err != nil {
		t.Fatal(err)
	}
	if err := b.Ack(req); err != nil {
		t.Fatal(err)
	}
	m := recv(t, replies)
	if string(m.Body) != "pong" || m.Header.Get("subscription") != "/temp-queue/r" || m.Header.Get("correlation-id") != "42" {
		t.Fatalf("reply %q headers %v", m.Body, m.Header)
	}
}

// An explicit SUBSCRIBE to a /temp-queue/ receives every reply: there is
// no hidden second consumer competing with it.
func TestTempQueueExplicitSubscribe(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	rc := br.rawConnect("accept-version:1.2", "host:x")
	rc.send("SUBSCRIBE", nil, "destination:/temp-queue/mine", "id:mine", "receipt:s")
	rc.readUntil("RECEIPT")
	svc := br.dial()
	in, err := svc.Subscribe("/queue/svc2", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	rc.send("SEND", []byte("req"), "destination:/queue/svc2", "reply-to:/temp-queue/mine", "receipt:q")
	rc.readUntil("RECEIPT")
	rt := recv(t, in).Header.Get("reply-to")
	const n = 6
	for i := 0; i < n; i++ {
		if err := svc.Send(rt, "", []byte(fmt.Sprint(i)), gostomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		f := rc.read()
		if f.Command != "MESSAGE" || f.Get("subscription") != "mine" || string(f.Body) != fmt.Sprint(i) {
			t.Fatalf("reply %d: %s %v %q", i, f.Command, f.Headers, f.Body)
		}
	}
}

// DESIGN.md "Names across protocols": STOMP durable topic subscriptions in
// the RabbitMQ, ActiveMQ and Artemis dialects keep what is published while
// the subscriber is away and deliver it when it comes back.
func TestDurableTopicSubscriptionDialects(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	for _, tc := range []struct {
		name    string
		connect []func(*gostomp.Conn) error
		sub     []func(*frame.Frame) error
	}{
		{"rabbitmq", nil, []func(*frame.Frame) error{
			gostomp.SubscribeOpt.Id("news-sub"),
			gostomp.SubscribeOpt.Header("durable", "true"),
			gostomp.SubscribeOpt.Header("auto-delete", "false"),
		}},
		{"activemq", []func(*gostomp.Conn) error{gostomp.ConnOpt.Header("client-id", "amq-client")}, []func(*frame.Frame) error{
			gostomp.SubscribeOpt.Header("activemq.subscriptionName", "amq-sub"),
		}},
		{"artemis", []func(*gostomp.Conn) error{gostomp.ConnOpt.Header("client-id", "art-client")}, []func(*frame.Frame) error{
			gostomp.SubscribeOpt.Header("durable-subscription-name", "art-sub"),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest := "/topic/news." + tc.name
			base := br.srv.Conns()
			c := br.dial(tc.connect...)
			sub, err := c.Subscribe(dest, gostomp.AckClientIndividual, tc.sub...)
			if err != nil {
				t.Fatal(err)
			}
			barrier(t, c) // the subscription exists before anything is published
			p := br.dial()
			if err := p.Send(dest, "", []byte("online"), gostomp.SendOpt.Receipt); err != nil {
				t.Fatal(err)
			}
			if err := c.Ack(recv(t, sub)); err != nil {
				t.Fatal(err)
			}
			if err := c.Disconnect(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the subscriber to leave", func() bool { return br.srv.Conns() == base+1 })
			for i := 0; i < 3; i++ {
				if err := p.Send(dest, "", []byte(fmt.Sprint("away-", i)), gostomp.SendOpt.Receipt); err != nil {
					t.Fatal(err)
				}
			}
			c2 := br.dial(tc.connect...)
			sub2, err := c2.Subscribe(dest, gostomp.AckClientIndividual, tc.sub...)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				m := recv(t, sub2)
				if string(m.Body) != fmt.Sprint("away-", i) {
					t.Fatalf("got %q, want away-%d", m.Body, i)
				}
				if err := c2.Ack(m); err != nil {
					t.Fatal(err)
				}
			}
			if err := c2.Disconnect(); err != nil {
				t.Fatal(err)
			}
			if err := p.Disconnect(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "clients to leave", func() bool { return br.srv.Conns() == base })
		})
	}
}

// DESIGN.md "Dead letters": "A DLQ is an ordinary queue: consumable over
// both protocols".
func TestDeadLetterQueueConsumable(t *testing.T) {
	br := startBroker(t, engine.Config{Default: engine.Policy{MaxDeliveries: 1}}, nil)
	c := br.dial()
	sub, err := c.Subscribe("/queue/jobs", gostomp.AckClientIndividual)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send("/queue/jobs", "text/plain", []byte("job-1"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	if err := c.Nack(recv(t, sub)); err != nil {
		t.Fatal(err)
	}
	dlq, err := c.Subscribe("/queue/jobs.dlq", gostomp.AckClientIndividual)
	if err != nil {
		t.Fatal(err)
	}
	m := recv(t, dlq)
	if string(m.Body) != "job-1" || m.ContentType != "text/plain" || m.Header.Get("x-death-reason") != engine.DeathMaxDeliveries {
		t.Fatalf("dead letter %q %v", m.Body, m.Header)
	}
	if err := c.Ack(m); err != nil {
		t.Fatal(err)
	}
	br.waitMessages("jobs.dlq", 0)
}
