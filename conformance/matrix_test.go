package conformance

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"
)

// TestCrossProtocolMatrix sends one message from every publisher to every
// receiver in {MQTT 3.1.1, MQTT 5, STOMP 1.0, 1.1, 1.2, MQTT 5 over
// WebSocket, MQTT 3.1.1 over WebSocket, STOMP 1.2 over WebSocket} (MQTT
// over WebSocket twice: paho.golang and paho.mqtt.golang get there by
// different code), through a topic, a queue and a durable subscription,
// with four bodies, and checks what DESIGN.md ("Names across protocols",
// "Message properties across protocols") and docs/mqtt-design.md §8.8
// promise: the message arrives once, its body is byte-identical, and its
// properties map across. Publishers send what their protocol can carry:
// MQTT 3.1.1 nothing; MQTT 5 Content Type, Response Topic, binary
// Correlation Data, Message Expiry Interval, Payload Format Indicator
// (UTF-8 body) and user properties with a repeated key; STOMP
// content-type, reply-to, correlation-id, expires or expiration and
// custom headers. Receivers check all they can see, and nothing more.
//
// Cells are subtests named pub=<publisher>/recv=<receiver>/<case>/<body>
// (so -run 'Matrix/pub=mqtt5/recv=stomp1.0' picks a row), all on one
// broker, each with its own topic and queue names.
//
//   - topic: the receiver subscribes to a filter with a wildcard and a
//     level with a dot in it (MQTT mx/cN/+/v1.2/#, STOMP
//     /topic/mx.cN.*.v1/2.#); the message goes to mx/cN/dev.1/v1.2/t
//     (STOMP /topic/mx.cN.dev/1.v1/2.t).
//   - queue: $queue/mx.q.cN (STOMP /queue/mx.q.cN), consumed with acks.
//   - durable: the topic case's filter as a durable subscription, with
//     the receiver offline while the message is published. MQTT: a
//     persistent session's QoS 1 subscription (3.1.1: Clean Session 0;
//     5: Session Expiry Interval), for mqtt5-ws to $share/GROUP/FILTER;
//     STOMP: a durable subscription, each STOMP receiver in another of
//     the dialects DESIGN.md accepts.
//
// "Once": the publisher sends a marker after the message, confirmed after
// it; the receiver must get the message and then the marker, nothing in
// between. Every protocol here can express every case, so no cell is
// skipped.
func TestCrossProtocolMatrix(t *testing.T) {
	start := time.Now()
	// A PUBLISH with a 1 MiB body is over the default
	// mqtt.max_packet_size (1 MiB for the whole packet, announced in
	// CONNACK), so this broker allows 2 MiB.
	p := startTandemConfig(t, t.TempDir(), "mqtt:\n  max_packet_size: 2MiB\n")
	b := &mxBroker{mqtt: p.MQTT, stomp: p.STOMP, ws: mxReadyAddr(t, p, "websocket")}

	var cells []*mxCell
	for _, pub := range mxClients {
		for _, recv := range mxClients {
			for _, kase := range mxCases {
				for _, body := range mxBodies {
					cells = append(cells, &mxCell{id: "c" + strconv.Itoa(len(cells)), pub: pub, recv: recv, kase: kase, body: body})
				}
			}
		}
	}
	// Not t.Parallel: go test runs at most -parallel (GOMAXPROCS, 2 here)
	// parallel subtests at once, and a cell mostly waits on the network
	// and on fsyncs. Several goroutines calling t.Run bound the
	// concurrency themselves.
	work := make(chan *mxCell)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed []string
	for range mxConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				if !t.Run(c.name(), func(t *testing.T) { c.run(t, b) }) {
					mu.Lock()
					failed = append(failed, c.name())
					mu.Unlock()
				}
			}
		}()
	}
	for _, c := range cells {
		work <- c
	}
	close(work)
	wg.Wait()
	slices.Sort(failed)
	t.Logf("%d cells in %v; %d failed", len(cells), time.Since(start).Round(time.Millisecond), len(failed))
	if len(failed) > 0 {
		t.Logf("failed cells:\n%s", strings.Join(failed, "\n"))
	}
}

// mxConcurrency is how many cells run at once.
const mxConcurrency = 8

var mxClients = []mxClient{
	{name: "mqtt3.1.1", proto: mxMQTT3},
	{name: "mqtt5", proto: mxMQTT5},
	{name: "stomp1.0", proto: mxSTOMP, stomp: gostomp.V10, durable: mxActiveMQ, expiry: "expires"},
	{name: "stomp1.1", proto: mxSTOMP, stomp: gostomp.V11, durable: mxArtemis, expiry: "expiration"},
	{name: "stomp1.2", proto: mxSTOMP, stomp: gostomp.V12, durable: mxRabbitMQ, expiry: "expires"},
	{name: "mqtt5-ws", proto: mxMQTT5, ws: true, share: true},
	{name: "mqtt3.1.1-ws", proto: mxMQTT3, ws: true},
	{name: "stomp1.2-ws", proto: mxSTOMP, stomp: gostomp.V12, ws: true, durable: mxArtemisSubscriber, expiry: "expiration"},
}

var mxCases = []string{"topic", "queue", "durable"}

// mxBody is one of the bodies every cell is run with.
type mxBody struct {
	name        string
	data        []byte
	contentType string
	utf8        bool // sent with MQTT 5 Payload Format Indicator 1
}

var mxBodies = []mxBody{
	{name: "binary", data: mxBinary(), contentType: "application/octet-stream"},
	{name: "empty", data: []byte{}, contentType: "application/x-empty"},
	{name: "utf8", data: []byte("grüße, 世界 ✓\nline two: \"quoted\" \\ and a tab\t"), contentType: "text/plain; charset=utf-8", utf8: true},
	{name: "1MiB", data: mxMiB(), contentType: "application/octet-stream"},
}

// mxBinary is every byte value, NULs at both ends and in the middle: not
// UTF-8, not text, and cut short by any reader that stops at a NUL.
func mxBinary() []byte {
	b := []byte{0, 0}
	for i := range 256 {
		b = append(b, byte(i))
	}
	return append(b, 0, '\n', 0)
}

// mxMiB is 1 MiB of pseudo-random bytes (NULs among them), the same every
// run.
func mxMiB() []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// mxCell is one publisher, receiver, case and body.
type mxCell struct {
	id        string // unique in the run: names the cell's topic, queue and clients
	pub, recv mxClient
	kase      string
	body      mxBody
}

func (c *mxCell) name() string {
	return "pub=" + c.pub.name + "/recv=" + c.recv.name + "/" + c.kase + "/" + c.body.name
}

// Destinations, in each protocol's terms (DESIGN.md "Names across
// protocols": '/' and '.' swap between MQTT and STOMP topic names).
func (c *mxCell) mqttTopic() string   { return "mx/" + c.id + "/dev.1/v1.2/t" }
func (c *mxCell) stompTopic() string  { return "/topic/mx." + c.id + ".dev/1.v1/2.t" }
func (c *mxCell) mqttFilter() string  { return "mx/" + c.id + "/+/v1.2/#" }
func (c *mxCell) stompFilter() string { return "/topic/mx." + c.id + ".*.v1/2.#" }
func (c *mxCell) queue() string       { return "mx.q." + c.id }

// dest is where cl sends, or what it receives as the destination.
func (c *mxCell) dest(cl mxClient) string {
	switch {
	case c.kase == "queue" && cl.proto == mxSTOMP:
		return "/queue/" + c.queue()
	case c.kase == "queue":
		return "$queue/" + c.queue()
	case cl.proto == mxSTOMP:
		return c.stompTopic()
	}
	return c.mqttTopic()
}

// replyTo is the cell's reply destination in cl's terms: a topic with a
// dot in a level, or for the queue case a queue.
func (c *mxCell) replyTo(cl mxClient) string {
	switch {
	case c.kase == "queue" && cl.proto == mxSTOMP:
		return "/queue/mx.reply." + c.id
	case c.kase == "queue":
		return "$queue/mx.reply." + c.id
	case cl.proto == mxSTOMP:
		return "/topic/mx." + c.id + ".reply/v1.x"
	}
	return "mx/" + c.id + "/reply.v1/x"
}

// mxExpiry is the lifetime every publisher that can gives its message.
const mxExpiry = time.Hour

// props are the properties the cell's publisher sends: nil for MQTT 3.1.1,
// which has none.
func (c *mxCell) props(now time.Time) *mxProps {
	if c.pub.proto == mxMQTT3 {
		return nil
	}
	text := "v:1 é" // a colon: escaped as \c in STOMP 1.1 and 1.2
	if c.pub.proto == mxSTOMP && c.pub.stomp == gostomp.V10 {
		// STOMP 1.0 has no header escapes, but go-stomp writes them
		// for every version: it would send \c, which a 1.0 server
		// rightly keeps as two characters.
		text = "v1 é"
	}
	m := &mxProps{contentType: c.body.contentType, replyTo: c.replyTo(c.pub), corr: "corr-" + c.id,
		user: [][2]string{{"x-mx-cell", c.id}, {"x-mx-text", text}}}
	switch c.pub.proto {
	case mxMQTT5:
		// A repeated key: MQTT 5 allows it, and §8.8 keeps repeats.
		m.user = append(m.user, [2]string{"x-mx-rep", "a"}, [2]string{"x-mx-rep", "b"})
		// Correlation Data is binary: §8.8 passes its bytes unchanged
		// to STOMP, escaping only what STOMP must (here the colon).
		m.corr = "corr:" + c.id + "\xfe\xff"
		m.expirySec = uint32(mxExpiry / time.Second)
		if c.body.utf8 {
			one := byte(1)
			m.payloadFormat = &one
		}
	case mxSTOMP:
		m.expiryHeader = c.pub.expiry
		if c.pub.expiry == "expires" {
			m.expiryValue = strconv.FormatInt(now.Add(mxExpiry).UnixMilli(), 10)
		} else {
			m.expiryValue = strconv.FormatInt(mxExpiry.Milliseconds(), 10)
		}
	}
	return m
}

// run is one cell.
func (c *mxCell) run(t *testing.T, b *mxBroker) {
	durable := c.kase == "durable"
	r := c.subscribe(t, b)
	if durable {
		r.offline(t)
	}

	var pub mxPublisher
	switch c.pub.proto {
	case mxMQTT3:
		pub = mxDialMQTT3(t, b, c.pub.ws, c.id+"-pub", true)
	case mxMQTT5:
		pub, _ = mxDialMQTT5(t, b, c.pub.ws, c.id+"-pub", true, 0, nil)
	case mxSTOMP:
		pub = &mxSTOMPPub{c: mxDialSTOMP(t, b, c.pub.ws, c.pub.stomp, "")}
	}
	before := time.Now()
	sent := c.props(before)
	pub.publish(t, c.dest(c.pub), c.body.data, sent)
	after := time.Now()
	marker := []byte("marker " + c.id)
	pub.publish(t, c.dest(c.pub), marker, nil)

	if durable {
		r.resume(t)
	}
	got := r.next(t)
	if bytes.Equal(got.body, marker) {
		t.Fatalf("the marker arrived first: the message was lost")
	}
	c.check(t, got, sent, before, after)
	if next := r.next(t); !bytes.Equal(next.body, marker) {
		t.Errorf("after the message came %s, not the marker (%q): the message arrived more than once, or something else arrived",
			mxDescribe(next.body, c.body.data), marker)
	}
}

// subscribe connects the cell's receiver and subscribes it.
func (c *mxCell) subscribe(t *testing.T, b *mxBroker) mxReceiver {
	t.Helper()
	durable := c.kase == "durable"
	id := c.id + "-recv"
	switch c.recv.proto {
	case mxMQTT3:
		filter := c.mqttFilter()
		if c.kase == "queue" {
			filter = c.dest(c.recv)
		}
		return mxSubscribeMQTT3(t, b, c.recv.ws, id, filter, durable)
	case mxMQTT5:
		filter := c.mqttFilter()
		switch {
		case c.kase == "queue":
			filter = c.dest(c.recv)
		case durable && c.recv.share:
			filter = "$share/" + c.id + "g/" + filter
		}
		return mxSubscribeMQTT5(t, b, c.recv.ws, id, filter, durable)
	}
	ack := gostomp.AckClientIndividual
	if c.recv.stomp == gostomp.V10 {
		ack = gostomp.AckClient // 1.0 has no client-individual
	}
	switch c.kase {
	case "topic":
		return mxSubscribeSTOMP(t, b, c.recv, "", c.stompFilter(), gostomp.AckAuto)
	case "queue":
		return mxSubscribeSTOMP(t, b, c.recv, "", c.dest(c.recv), ack)
	}
	h := gostomp.SubscribeOpt.Header
	switch c.recv.durable {
	case mxActiveMQ:
		return mxSubscribeSTOMP(t, b, c.recv, id, c.stompFilter(), ack, h("activemq.subscriptionName", "sub"))
	case mxArtemis:
		return mxSubscribeSTOMP(t, b, c.recv, id, c.stompFilter(), ack, h("durable-subscription-name", "sub"))
	case mxArtemisSubscriber:
		return mxSubscribeSTOMP(t, b, c.recv, id, c.stompFilter(), ack, h("durable-subscriber-name", "sub"))
	}
	return mxSubscribeSTOMP(t, b, c.recv, "", c.stompFilter(), ack,
		gostomp.SubscribeOpt.Id(id), h("durable", "true"), h("auto-delete", "false"))
}

// check compares a received message with what was sent.
func (c *mxCell) check(t *testing.T, got mxGot, sent *mxProps, before, after time.Time) {
	t.Helper()
	if want := c.dest(c.recv); got.dest != want {
		t.Errorf("arrived at %q, want %q", got.dest, want)
	}
	if !bytes.Equal(got.body, c.body.data) {
		t.Errorf("body differs: got %s, sent %s", mxDescribe(got.body, c.body.data), mxDescribe(c.body.data, nil))
	}
	switch c.recv.proto {
	case mxMQTT3, mxMQTT5:
		// DUP is not checked for a durable receiver: MQTT has no receipt
		// for DISCONNECT, so the broker may still write the message to
		// the closing connection and then, rightly, resend it with DUP.
		if got.qos != 1 || (got.dup && c.kase != "durable") || got.retain {
			t.Errorf("arrived with QoS %d, DUP %v, RETAIN %v; want QoS 1 (published at 1, subscribed at 1), DUP 0, RETAIN 0",
				got.qos, got.dup, got.retain)
		}
	}
	switch c.recv.proto {
	case mxMQTT5:
		c.checkMQTT5(t, got, sent)
	case mxSTOMP:
		c.checkSTOMP(t, got, sent, before, after)
	}
}

// checkMQTT5 checks the MQTT 5 properties of a delivery (§8.8, engine to
// MQTT 5).
func (c *mxCell) checkMQTT5(t *testing.T, got mxGot, sent *mxProps) {
	t.Helper()
	p := got.props
	if sent == nil {
		if p.ContentType != "" || p.ResponseTopic != "" || p.CorrelationData != nil || p.MessageExpiry != nil ||
			p.PayloadFormat != nil || len(p.User) > 0 {
			t.Errorf("an MQTT 3.1.1 message (no properties) arrived with properties %s", mxPahoProps(p))
		}
		return
	}
	var errs []string
	if p.ContentType != sent.contentType {
		errs = append(errs, fmt.Sprintf("Content Type %q, want %q", p.ContentType, sent.contentType))
	}
	if want := c.replyTo(c.recv); p.ResponseTopic != want {
		errs = append(errs, fmt.Sprintf("Response Topic %q, want %q (sent as %q)", p.ResponseTopic, want, sent.replyTo))
	}
	if string(p.CorrelationData) != sent.corr {
		errs = append(errs, fmt.Sprintf("Correlation Data %q, want %q", p.CorrelationData, sent.corr))
	}
	// The remaining lifetime, rounded up [MQTT-3.3.2-6]: at most the
	// hour sent, and well over anything this test can spend.
	if e := p.MessageExpiry; e == nil || *e > uint32(mxExpiry/time.Second) || *e < uint32((mxExpiry-10*time.Minute)/time.Second) {
		errs = append(errs, fmt.Sprintf("Message Expiry Interval %s, want the rest of %v", mxUint32(e), mxExpiry))
	}
	switch pf := p.PayloadFormat; {
	case sent.payloadFormat == nil && pf != nil:
		errs = append(errs, fmt.Sprintf("Payload Format Indicator %d, none sent", *pf))
	case sent.payloadFormat != nil && (pf == nil || *pf != *sent.payloadFormat):
		errs = append(errs, fmt.Sprintf("Payload Format Indicator %s, want %d [MQTT-3.3.2-4]", mxByte(pf), *sent.payloadFormat))
	}
	var user [][2]string
	for _, u := range p.User {
		user = append(user, [2]string{u.Key, u.Value})
	}
	if !slices.Equal(user, sent.user) {
		errs = append(errs, fmt.Sprintf("user properties %q, want %q (in order, repeats kept)", user, sent.user))
	}
	if len(errs) > 0 {
		t.Errorf("MQTT 5 properties differ:\n\t%s\n\tgot %s", strings.Join(errs, "\n\t"), mxPahoProps(p))
	}
}

// mxBrokerHeaders are the headers a broker sets on a MESSAGE (DESIGN.md
// "Broker-set headers on delivery", plus the frame's own).
var mxBrokerHeaders = map[string]bool{
	"message-id": true, "destination": true, "subscription": true, "ack": true,
	"redelivered": true, "x-delivery-count": true, "content-length": true,
}

// mxMappedHeaders are the headers with a meaning across protocols
// (§8.8); the rest are user properties.
var mxMappedHeaders = []string{"content-type", "reply-to", "correlation-id", "expires", "expiration", "mqtt-payload-format"}

// checkSTOMP checks the headers of a MESSAGE (§8.8, engine to STOMP).
func (c *mxCell) checkSTOMP(t *testing.T, got mxGot, sent *mxProps, before, after time.Time) {
	t.Helper()
	h := got.header
	var errs []string
	if s := h.Get("subscription"); s != got.subID {
		errs = append(errs, fmt.Sprintf("subscription %q, want %q", s, got.subID))
	}
	if h.Get("message-id") == "" {
		errs = append(errs, "no message-id")
	}
	if cl := h.Get("content-length"); cl != strconv.Itoa(len(c.body.data)) {
		errs = append(errs, fmt.Sprintf("content-length %q, want %d", cl, len(c.body.data)))
	}
	if c.kase != "topic" {
		// A queue delivery, first attempt.
		if r, n := h.Get("redelivered"), h.Get("x-delivery-count"); r != "false" || n != "1" {
			errs = append(errs, fmt.Sprintf("redelivered %q, x-delivery-count %q; want false, 1", r, n))
		}
	}

	mapped := map[string][]string{}
	var user [][2]string
	for i := range h.Len() {
		k, v := h.GetAt(i)
		switch {
		case mxBrokerHeaders[k]:
		case slices.Contains(mxMappedHeaders, k):
			mapped[k] = append(mapped[k], v)
		default:
			user = append(user, [2]string{k, v})
		}
	}
	want := map[string]string{}
	var wantUser [][2]string
	if sent != nil {
		want["content-type"] = sent.contentType
		want["reply-to"] = c.replyTo(c.recv)
		want["correlation-id"] = sent.corr
		wantUser = sent.user
		switch c.pub.proto {
		case mxMQTT5:
			// Checked below: absolute ms, set by the broker.
			want["expires"] = ""
			if sent.payloadFormat != nil {
				want["mqtt-payload-format"] = strconv.Itoa(int(*sent.payloadFormat))
			}
		case mxSTOMP:
			want[sent.expiryHeader] = sent.expiryValue
		}
	}
	for _, k := range mxMappedHeaders {
		w, ok := want[k]
		g := mapped[k]
		switch {
		case !ok && len(g) > 0:
			errs = append(errs, fmt.Sprintf("%s %q, none expected", k, g))
		case ok && len(g) != 1:
			errs = append(errs, fmt.Sprintf("%s %q, want one", k, g))
		case ok && k == "expires" && c.pub.proto == mxMQTT5:
			// The MQTT 5 Message Expiry Interval counts from when the
			// broker read the PUBLISH.
			ms, err := strconv.ParseInt(g[0], 10, 64)
			lo, hi := before.Add(mxExpiry).Add(-time.Second).UnixMilli(), after.Add(mxExpiry).Add(time.Second).UnixMilli()
			if err != nil || ms < lo || ms > hi {
				errs = append(errs, fmt.Sprintf("expires %q, want Unix ms in [%d, %d] (publish time + %v)", g[0], lo, hi, mxExpiry))
			}
		case ok && g[0] != w:
			errs = append(errs, fmt.Sprintf("%s %q, want %q", k, g[0], w))
		}
	}
	if !slices.Equal(user, wantUser) {
		errs = append(errs, fmt.Sprintf("other headers %q, want %q (in order)", user, wantUser))
	}
	if len(errs) > 0 {
		t.Errorf("STOMP headers differ:\n\t%s\n\tgot %s", strings.Join(errs, "\n\t"), mxHeaders(h))
	}
}

// mxDescribe describes a body briefly: its length, and where it first
// differs from want (when want is not nil), or its start.
func mxDescribe(body, want []byte) string {
	s := fmt.Sprintf("%d bytes", len(body))
	if want != nil && !bytes.Equal(body, want) {
		i := 0
		for i < len(body) && i < len(want) && body[i] == want[i] {
			i++
		}
		s += fmt.Sprintf(" differing from offset %d", i)
		body = body[i:]
	}
	if len(body) > 32 {
		return s + fmt.Sprintf(" %q...", body[:32])
	}
	return s + fmt.Sprintf(" %q", body)
}

// mxPahoProps prints MQTT 5 publish properties.
func mxPahoProps(p *paho.PublishProperties) string {
	var user []string
	for _, u := range p.User {
		user = append(user, u.Key+"="+u.Value)
	}
	return fmt.Sprintf("{Content Type %q, Response Topic %q, Correlation Data %q, Message Expiry Interval %s, Payload Format %s, user %q}",
		p.ContentType, p.ResponseTopic, p.CorrelationData, mxUint32(p.MessageExpiry), mxByte(p.PayloadFormat), user)
}

func mxUint32(p *uint32) string {
	if p == nil {
		return "none"
	}
	return strconv.FormatUint(uint64(*p), 10)
}

func mxByte(p *byte) string {
	if p == nil {
		return "none"
	}
	return strconv.Itoa(int(*p))
}

// mxHeaders prints a frame's headers in order.
func mxHeaders(h *frame.Header) string {
	var hs []string
	for i := range h.Len() {
		k, v := h.GetAt(i)
		hs = append(hs, k+":"+v)
	}
	return fmt.Sprintf("%q", hs)
}
