package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"
)

// The clients of the cross-protocol matrix (matrix_test.go): one
// publisher and one receiver type per protocol, each over TCP or
// WebSocket, behind the small interfaces the matrix drives.

// mxWait bounds every wait of a matrix cell: a connect, a confirm, the
// next message.
const mxWait = 20 * time.Second

// mxProto is a client's protocol family.
type mxProto int

const (
	mxMQTT3 mxProto = iota // paho.mqtt.golang, MQTT 3.1.1
	mxMQTT5                // paho.golang, MQTT 5
	mxSTOMP                // go-stomp, the version in mxClient.stomp
)

// mxClient is one row (as publisher) and one column (as receiver) of the
// matrix.
type mxClient struct {
	name  string
	proto mxProto
	ws    bool            // over the WebSocket listener instead of TCP
	stomp gostomp.Version // mxSTOMP: the one version offered
	// durable is the STOMP durable-subscription dialect this client
	// uses: DESIGN.md accepts all of them, so the receivers share them out.
	durable mxDialect
	// share: as a durable receiver this MQTT client subscribes to
	// $share/GROUP/FILTER (in a persistent session) rather than to FILTER.
	share bool
	// expiry is the STOMP expiry header this client sends: "expires"
	// (ActiveMQ, absolute ms) or "expiration" (RabbitMQ, relative ms).
	expiry string
}

// mxDialect is a STOMP durable topic subscription dialect.
type mxDialect int

const (
	mxActiveMQ          mxDialect = iota // client-id on CONNECT + activemq.subscriptionName
	mxArtemis                            // client-id on CONNECT + durable-subscription-name
	mxRabbitMQ                           // durable:true, auto-delete:false, named by id
	mxArtemisSubscriber                  // client-id on CONNECT + durable-subscriber-name
)

func (d mxDialect) String() string {
	return [...]string{"ActiveMQ activemq.subscriptionName", "Artemis durable-subscription-name",
		"RabbitMQ durable:true", "Artemis durable-subscriber-name"}[d]
}

// mxBroker is the one broker the whole matrix shares.
type mxBroker struct {
	mqtt, stomp, ws string // host:port
}

// mxReadyAddr returns the address the broker's ready line gives for key
// (the harness keeps only stomp, mqtt and admin).
func mxReadyAddr(t *testing.T, p *tandemProc, key string) string {
	t.Helper()
	for _, line := range p.stderr.all() {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["message"] == "ready" {
			if a, _ := rec[key].(string); a != "" {
				return a
			}
			t.Fatalf("ready line has no %q address: %s", key, line)
		}
	}
	t.Fatal("no ready line")
	return ""
}

// mxGot is a received message in one shape for every protocol.
type mxGot struct {
	dest string // MQTT topic name or STOMP destination header
	body []byte
	// MQTT only.
	qos         byte
	dup, retain bool
	props       *paho.PublishProperties // MQTT 5 only; never nil there
	// STOMP only.
	header *frame.Header
	subID  string // the subscription the MESSAGE came on
}

// mxPublisher sends messages and returns once the broker confirmed each:
// PUBACK (MQTT QoS 1) or RECEIPT (STOMP).
type mxPublisher interface {
	// publish sends body to dest (the publisher's own form) with the
	// properties of m; m nil sends none (the marker).
	publish(t *testing.T, dest string, body []byte, m *mxProps)
}

// mxReceiver is a subscribed consumer. next returns the next message
// (acknowledged: MQTT PUBACK by the client library, STOMP ACK for client
// acks) or fails the test after mxWait.
type mxReceiver interface {
	next(t *testing.T) mxGot
	// offline disconnects, leaving a durable subscription behind.
	offline(t *testing.T)
	// resume reconnects to the durable subscription offline left.
	resume(t *testing.T)
}

// mxProps are the message properties a publisher sends, each in its own
// protocol's terms.
type mxProps struct {
	contentType string
	replyTo     string // MQTT response topic or STOMP reply-to
	corr        string
	user        [][2]string // user properties or custom headers, in order
	// MQTT 5.
	expirySec     uint32
	payloadFormat *byte
	// STOMP: the expiry header and its value.
	expiryHeader, expiryValue string
}

// mxOffer hands a received message to the test without ever blocking the
// client library: a cell reads two messages, so a full channel means the
// broker sent many more, and the cell fails on what it did read.
func mxOffer[M any](ch chan M, m M) {
	select {
	case ch <- m:
	default:
	}
}

// ---- MQTT 3.1.1: paho.mqtt.golang over TCP or WebSocket ----

type mxMQTT3Client struct {
	c  pahov3.Client
	ch chan pahov3.Message
}

// mxDialMQTT3 connects a paho.mqtt.golang client. Every message goes to
// the default handler (subscriptions are made without a callback, and a
// resumed session's have none), which feeds ch.
func mxDialMQTT3(t *testing.T, b *mxBroker, ws bool, id string, clean bool) *mxMQTT3Client {
	t.Helper()
	c := &mxMQTT3Client{ch: make(chan pahov3.Message, 16)}
	url := "tcp://" + b.mqtt
	if ws {
		url = "ws://" + b.ws + "/mqtt"
	}
	opts := pahov3.NewClientOptions().AddBroker(url).SetClientID(id).SetProtocolVersion(4).
		SetCleanSession(clean).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(mxWait).
		SetWriteTimeout(mxWait).SetKeepAlive(time.Minute).SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { mxOffer(c.ch, m) })
	c.c = pahov3.NewClient(opts)
	t.Cleanup(func() { c.c.Disconnect(0) })
	c.wait(t, "connect "+id, c.c.Connect())
	return c
}

func (c *mxMQTT3Client) wait(t *testing.T, what string, tok pahov3.Token) {
	t.Helper()
	if !tok.WaitTimeout(mxWait) {
		t.Fatalf("MQTT 3.1.1 %s: no answer within %v", what, mxWait)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("MQTT 3.1.1 %s: %v", what, err)
	}
}

func (c *mxMQTT3Client) publish(t *testing.T, dest string, body []byte, _ *mxProps) {
	t.Helper()
	c.wait(t, "publish to "+dest, c.c.Publish(dest, 1, false, body))
}

type mxMQTT3Recv struct {
	*mxMQTT3Client
	b      *mxBroker
	ws     bool
	id     string
	filter string
}

func mxSubscribeMQTT3(t *testing.T, b *mxBroker, ws bool, id, filter string, persistent bool) *mxMQTT3Recv {
	t.Helper()
	r := &mxMQTT3Recv{mxMQTT3Client: mxDialMQTT3(t, b, ws, id, !persistent), b: b, ws: ws, id: id, filter: filter}
	tok := r.c.Subscribe(filter, 1, nil)
	r.wait(t, "subscribe to "+filter, tok)
	// paho.mqtt.golang keys the result by the filter without a $queue/
	// or $share/GROUP/ prefix; there is one filter.
	res := tok.(*pahov3.SubscribeToken).Result()
	if len(res) != 1 || slices.Collect(maps.Values(res))[0] != 1 {
		t.Fatalf("MQTT 3.1.1 SUBACK for %s granted %v, want QoS 1", filter, res)
	}
	return r
}

func (r *mxMQTT3Recv) next(t *testing.T) mxGot {
	t.Helper()
	select {
	case m := <-r.ch:
		return mxGot{dest: m.Topic(), body: m.Payload(), qos: m.Qos(), dup: m.Duplicate(), retain: m.Retained()}
	case <-time.After(mxWait):
		t.Fatalf("MQTT 3.1.1 receiver %s (%s): no message within %v", r.id, r.filter, mxWait)
		return mxGot{}
	}
}

func (r *mxMQTT3Recv) offline(t *testing.T) {
	// The quiesce lets the DISCONNECT out before the socket closes.
	r.c.Disconnect(250)
}

func (r *mxMQTT3Recv) resume(t *testing.T) {
	t.Helper()
	r.mxMQTT3Client = mxDialMQTT3(t, r.b, r.ws, r.id, false)
	if !r.c.IsConnectionOpen() {
		t.Fatalf("MQTT 3.1.1 %s: not connected after resume", r.id)
	}
}

// ---- MQTT 5: paho.golang over TCP or WebSocket ----

// mxLockedConn makes paho.golang write each packet whole: it writes a
// packet's parts with separate Writes, holding the connection's lock if it
// has one; over a WebSocket each Write is a message, and another
// goroutine's packet could otherwise come between them (see
// cmd/tandem/ws_test.go lockedConn).
type mxLockedConn struct {
	net.Conn
	sync.Mutex
}

type mxMQTT5Client struct {
	c  *paho.Client
	ch chan *paho.Publish
}

// mxDialMQTT5 connects paho.golang with the given clean start and
// session expiry, over the WebSocket listener when ws is set. st, if not
// nil, is the session state to keep across connections.
func mxDialMQTT5(t *testing.T, b *mxBroker, ws bool, id string, clean bool, expiry uint32, st *state.State) (*mxMQTT5Client, *paho.Connack) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mxWait)
	defer cancel()
	var nc net.Conn
	if ws {
		wc, _, err := websocket.Dial(ctx, "ws://"+b.ws+"/mqtt", &websocket.DialOptions{Subprotocols: []string{"mqtt"}})
		if err != nil {
			t.Fatalf("MQTT 5 WebSocket dial: %v", err)
		}
		nc = &mxLockedConn{Conn: websocket.NetConn(context.Background(), wc, websocket.MessageBinary)}
	} else {
		var err error
		if nc, err = net.DialTimeout("tcp", b.mqtt, mxWait); err != nil {
			t.Fatalf("MQTT 5 dial: %v", err)
		}
	}
	c := &mxMQTT5Client{ch: make(chan *paho.Publish, 16)}
	cfg := paho.ClientConfig{ClientID: id, Conn: nc, PacketTimeout: mxWait,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { mxOffer(c.ch, pr.Packet); return true, nil },
		}}
	if st != nil {
		cfg.Session = st
	}
	c.c = paho.NewClient(cfg)
	cp := &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 60}
	if expiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	ca, err := c.c.Connect(ctx, cp)
	if err != nil {
		_ = nc.Close()
		t.Fatalf("MQTT 5 connect %s: %v", id, err)
	}
	t.Cleanup(func() {
		_ = c.c.Disconnect(&paho.Disconnect{})
		select {
		case <-c.c.Done():
		case <-time.After(mxWait):
		}
	})
	return c, ca
}

func (c *mxMQTT5Client) publish(t *testing.T, dest string, body []byte, m *mxProps) {
	t.Helper()
	p := &paho.Publish{Topic: dest, QoS: 1, Payload: body}
	if m != nil {
		p.Properties = &paho.PublishProperties{ContentType: m.contentType, ResponseTopic: m.replyTo,
			CorrelationData: []byte(m.corr), PayloadFormat: m.payloadFormat}
		if m.expirySec > 0 {
			e := m.expirySec
			p.Properties.MessageExpiry = &e
		}
		for _, kv := range m.user {
			p.Properties.User = append(p.Properties.User, paho.UserProperty{Key: kv[0], Value: kv[1]})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), mxWait)
	defer cancel()
	pr, err := c.c.Publish(ctx, p)
	if err != nil {
		t.Fatalf("MQTT 5 publish to %s: %v", dest, err)
	}
	if pr.ReasonCode >= 0x80 {
		t.Fatalf("MQTT 5 publish to %s: PUBACK reason code %#x", dest, pr.ReasonCode)
	}
}

type mxMQTT5Recv struct {
	*mxMQTT5Client
	b      *mxBroker
	ws     bool
	id     string
	filter string
	st     *state.State
}

// mxSessionExpiry is a persistent receiver's session expiry interval.
const mxSessionExpiry = 600

func mxSubscribeMQTT5(t *testing.T, b *mxBroker, ws bool, id, filter string, persistent bool) *mxMQTT5Recv {
	t.Helper()
	r := &mxMQTT5Recv{b: b, ws: ws, id: id, filter: filter}
	var expiry uint32
	if persistent {
		r.st, expiry = state.NewInMemory(), mxSessionExpiry
	}
	r.mxMQTT5Client, _ = mxDialMQTT5(t, b, ws, id, true, expiry, r.st)
	ctx, cancel := context.WithTimeout(context.Background(), mxWait)
	defer cancel()
	sa, err := r.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	if err != nil {
		t.Fatalf("MQTT 5 subscribe to %s: %v", filter, err)
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] != 1 {
		t.Fatalf("MQTT 5 SUBACK for %s: reason codes %#x, want [0x01]", filter, sa.Reasons)
	}
	return r
}

func (r *mxMQTT5Recv) next(t *testing.T) mxGot {
	t.Helper()
	select {
	case p := <-r.ch:
		g := mxGot{dest: p.Topic, body: p.Payload, qos: p.QoS, dup: p.Duplicate(), retain: p.Retain, props: p.Properties}
		if g.props == nil {
			g.props = &paho.PublishProperties{}
		}
		return g
	case <-time.After(mxWait):
		t.Fatalf("MQTT 5 receiver %s (%s): no message within %v", r.id, r.filter, mxWait)
		return mxGot{}
	}
}

func (r *mxMQTT5Recv) offline(t *testing.T) {
	t.Helper()
	_ = r.c.Disconnect(&paho.Disconnect{})
	select {
	case <-r.c.Done():
	case <-time.After(mxWait):
		t.Fatalf("MQTT 5 %s: client did not stop within %v of DISCONNECT", r.id, mxWait)
	}
}

func (r *mxMQTT5Recv) resume(t *testing.T) {
	t.Helper()
	var ca *paho.Connack
	r.mxMQTT5Client, ca = mxDialMQTT5(t, r.b, r.ws, r.id, false, mxSessionExpiry, r.st)
	if !ca.SessionPresent {
		t.Errorf("MQTT 5 %s: CONNACK with Clean Start 0 after a session with expiry %ds has Session Present 0", r.id, mxSessionExpiry)
	}
}

// ---- STOMP: go-stomp over TCP or WebSocket ----

// mxWSConn is a net.Conn over a client WebSocket for STOMP. It reads text
// and binary messages alike (the broker sends a frame that is not UTF-8,
// a binary body, as a binary message), and writes each Write as one
// message: text when it is valid UTF-8, binary otherwise, as the broker
// does. websocket.NetConn takes one message type and closes the
// connection when the other comes.
type mxWSConn struct {
	c    *websocket.Conn
	r    io.Reader // the message being read; nil between messages
	addr net.Addr
}

// mxMaxEmptyMessages bounds the empty WebSocket messages one Read skips.
const mxMaxEmptyMessages = 1000

func (w *mxWSConn) Read(p []byte) (int, error) {
	for range mxMaxEmptyMessages {
		if w.r == nil {
			_, r, err := w.c.Reader(context.Background())
			if err != nil {
				return 0, err
			}
			w.r = r
		}
		n, err := w.r.Read(p)
		if errors.Is(err, io.EOF) {
			w.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
	return 0, fmt.Errorf("%d empty WebSocket messages in a row", mxMaxEmptyMessages)
}

func (w *mxWSConn) Write(p []byte) (int, error) {
	typ := websocket.MessageBinary
	if utf8.Valid(p) {
		typ = websocket.MessageText
	}
	ctx, cancel := context.WithTimeout(context.Background(), mxWait)
	defer cancel()
	if err := w.c.Write(ctx, typ, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close closes the WebSocket. Its error is dropped: go-stomp closes the
// connection after the DISCONNECT's RECEIPT, and by then the broker may
// have closed it first, which is no failure.
func (w *mxWSConn) Close() error {
	_ = w.c.Close(websocket.StatusNormalClosure, "")
	return nil
}

func (w *mxWSConn) LocalAddr() net.Addr              { return w.addr }
func (w *mxWSConn) RemoteAddr() net.Addr             { return w.addr }
func (w *mxWSConn) SetDeadline(time.Time) error      { return nil }
func (w *mxWSConn) SetReadDeadline(time.Time) error  { return nil }
func (w *mxWSConn) SetWriteDeadline(time.Time) error { return nil }

// mxDialSTOMP connects go-stomp offering only version v, with client-id
// on CONNECT when clientID is not empty.
func mxDialSTOMP(t *testing.T, b *mxBroker, ws bool, v gostomp.Version, clientID string) *gostomp.Conn {
	t.Helper()
	var nc net.Conn
	if ws {
		ctx, cancel := context.WithTimeout(context.Background(), mxWait)
		defer cancel()
		sub := map[gostomp.Version]string{gostomp.V10: "v10.stomp", gostomp.V11: "v11.stomp", gostomp.V12: "v12.stomp"}[v]
		wc, _, err := websocket.Dial(ctx, "ws://"+b.ws+"/stomp", &websocket.DialOptions{Subprotocols: []string{sub}})
		if err != nil {
			t.Fatalf("STOMP WebSocket dial: %v", err)
		}
		wc.SetReadLimit(64 << 20)
		addr, _ := net.ResolveTCPAddr("tcp", b.ws)
		nc = &mxWSConn{c: wc, addr: addr}
	} else {
		var err error
		if nc, err = net.DialTimeout("tcp", b.stomp, mxWait); err != nil {
			t.Fatalf("STOMP dial: %v", err)
		}
	}
	opts := []func(*gostomp.Conn) error{gostomp.ConnOpt.AcceptVersion(v), gostomp.ConnOpt.HeartBeat(0, 0),
		gostomp.ConnOpt.Host("/"), gostomp.ConnOpt.RcvReceiptTimeout(mxWait), gostomp.ConnOpt.MsgSendTimeout(mxWait),
		gostomp.ConnOpt.DisconnectReceiptTimeout(mxWait), gostomp.ConnOpt.Logger(quietLogger{})}
	if clientID != "" {
		opts = append(opts, gostomp.ConnOpt.Header("client-id", clientID))
	}
	c, err := gostomp.Connect(nc, opts...)
	if err != nil {
		_ = nc.Close()
		t.Fatalf("STOMP %s connect: %v", v, err)
	}
	if c.Version() != v {
		t.Fatalf("STOMP connected as %s, offered only %s", c.Version(), v)
	}
	t.Cleanup(func() { _ = c.Disconnect() })
	return c
}

type mxSTOMPPub struct{ c *gostomp.Conn }

func (p *mxSTOMPPub) publish(t *testing.T, dest string, body []byte, m *mxProps) {
	t.Helper()
	opts := []func(*frame.Frame) error{gostomp.SendOpt.Receipt}
	ct := "text/plain"
	if m != nil {
		ct = m.contentType
		opts = append(opts, gostomp.SendOpt.Header("reply-to", m.replyTo), gostomp.SendOpt.Header("correlation-id", m.corr),
			gostomp.SendOpt.Header(m.expiryHeader, m.expiryValue))
		for _, kv := range m.user {
			opts = append(opts, gostomp.SendOpt.Header(kv[0], kv[1]))
		}
	}
	if err := p.c.Send(dest, ct, body, opts...); err != nil {
		t.Fatalf("STOMP SEND to %s: %v", dest, err)
	}
}

type mxSTOMPRecv struct {
	what     string // for messages: the destination, and for a durable subscription its dialect
	b        *mxBroker
	cl       mxClient
	clientID string // "" unless the dialect needs one
	dest     string
	ack      gostomp.AckMode
	opts     []func(*frame.Frame) error
	c        *gostomp.Conn
	sub      *gostomp.Subscription
}

// mxSubscribeSTOMP subscribes to dest with ack mode ack (and the durable
// subscription headers in opts), and returns once the broker processed
// the SUBSCRIBE.
func mxSubscribeSTOMP(t *testing.T, b *mxBroker, cl mxClient, clientID, dest string, ack gostomp.AckMode, opts ...func(*frame.Frame) error) *mxSTOMPRecv {
	t.Helper()
	r := &mxSTOMPRecv{what: dest, b: b, cl: cl, clientID: clientID, dest: dest, ack: ack, opts: opts}
	if len(opts) > 0 {
		r.what = fmt.Sprintf("durable subscription to %s, %v dialect", dest, cl.durable)
	}
	r.subscribe(t)
	return r
}

func (r *mxSTOMPRecv) subscribe(t *testing.T) {
	t.Helper()
	r.c = mxDialSTOMP(t, r.b, r.cl.ws, r.cl.stomp, r.clientID)
	var err error
	if r.sub, err = r.c.Subscribe(r.dest, r.ack, r.opts...); err != nil {
		t.Fatalf("STOMP SUBSCRIBE (%s): %v", r.what, err)
	}
	// The broker handles a connection's frames in order: this SEND's
	// RECEIPT means the SUBSCRIBE before it was processed.
	if err := r.c.Send("/topic/mx.sync", "text/plain", nil, gostomp.SendOpt.Receipt); err != nil {
		t.Fatalf("STOMP SEND with receipt after SUBSCRIBE (%s): %v", r.what, err)
	}
}

func (r *mxSTOMPRecv) next(t *testing.T) mxGot {
	t.Helper()
	select {
	case m, ok := <-r.sub.C:
		if !ok {
			t.Fatalf("STOMP subscription (%s) closed", r.what)
		}
		if m.Err != nil {
			t.Fatalf("STOMP subscription (%s): %v", r.what, m.Err)
		}
		if r.ack != gostomp.AckAuto {
			if err := r.c.Ack(m); err != nil {
				t.Fatalf("STOMP ACK: %v", err)
			}
		}
		return mxGot{dest: m.Destination, body: m.Body, header: m.Header, subID: r.sub.Id()}
	case <-time.After(mxWait):
		t.Fatalf("STOMP receiver (%s): no message within %v", r.what, mxWait)
		return mxGot{}
	}
}

func (r *mxSTOMPRecv) offline(t *testing.T) {
	t.Helper()
	// DISCONNECT with a receipt: once it is back, the broker has dropped
	// the consumer; the durable subscription stays (no UNSUBSCRIBE).
	if err := r.c.Disconnect(); err != nil {
		t.Fatalf("STOMP DISCONNECT: %v", err)
	}
}

func (r *mxSTOMPRecv) resume(t *testing.T) { r.subscribe(t) }
