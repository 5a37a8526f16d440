package mqtt_test

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/engine/memstore"
	"github.com/tandem-mq/tandem/mqtt"
)

// waitTimeout bounds every wait; reaching it means a hang.
const waitTimeout = 10 * time.Second

// broker is an engine and an MQTT server on a loopback port.
type broker struct {
	t    *testing.T
	b    *engine.Broker
	srv  *mqtt.Server
	addr string
	done chan error // Serve's result
}

type options struct {
	store engine.Store
	cfg   func(*mqtt.Config)
}

func startBroker(t *testing.T, o options) *broker {
	t.Helper()
	if o.store == nil {
		o.store = memstore.New()
	}
	b, err := engine.Open(o.store, engine.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := mqtt.DefaultConfig()
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	srv, err := mqtt.NewServer(b, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	br := &broker{t: t, b: b, srv: srv, addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { br.done <- srv.Serve(ln) }()
	t.Cleanup(func() { br.close() })
	if g, ok := o.store.(*gateStore); ok {
		t.Cleanup(g.open) // runs first: a failed test must not hang in Close
	}
	return br
}

// close stops the server (joining its goroutines) and the engine; it may
// run twice.
func (br *broker) close() {
	t := br.t
	if err := br.srv.Close(); err != nil {
		t.Error(err)
	}
	select {
	case err := <-br.done:
		if err != mqtt.ErrServerClosed {
			t.Errorf("Serve returned %v", err)
		}
		br.done <- err
	case <-time.After(waitTimeout):
		t.Error("Serve did not return")
	}
	if err := br.b.Close(); err != nil {
		t.Error(err)
	}
}

// v3 is a paho.mqtt.golang (MQTT 3.1.1) client whose messages arrive on C.
type v3 struct {
	pahov3.Client
	C chan pahov3.Message
}

func (br *broker) dial3(id string) *v3 {
	br.t.Helper()
	c, _ := br.dial3Session(id, true)
	return c
}

// dial3Session connects with the given clean session flag and returns the
// CONNACK's session present.
func (br *broker) dial3Session(id string, clean bool) (*v3, bool) {
	t := br.t
	t.Helper()
	c := &v3{C: make(chan pahov3.Message, 1000)}
	opts := pahov3.NewClientOptions().AddBroker("tcp://" + br.addr).SetClientID(id).
		SetProtocolVersion(4).SetCleanSession(clean).SetAutoReconnect(false).
		SetOrderMatters(true).SetKeepAlive(30 * time.Second).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { c.C <- m })
	c.Client = pahov3.NewClient(opts)
	tok := c.Connect()
	wait(t, tok)
	t.Cleanup(func() { c.Disconnect(0) })
	return c, tok.(*pahov3.ConnectToken).SessionPresent()
}

func wait(t *testing.T, tok pahov3.Token) {
	t.Helper()
	if !tok.WaitTimeout(waitTimeout) {
		t.Fatal("paho token timed out")
	}
	if err := tok.Error(); err != nil {
		t.Fatal(err)
	}
}

func (c *v3) sub(t *testing.T, filter string, qos byte) {
	t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	wait(t, tok)
	if got := tok.(*pahov3.SubscribeToken).Result()[filter]; got != qos {
		t.Fatalf("subscribe %q: granted %d, want %d", filter, got, qos)
	}
}

func (c *v3) pub(t *testing.T, topic string, qos byte, body string) {
	t.Helper()
	wait(t, c.Publish(topic, qos, false, body))
}

func (c *v3) next(t *testing.T) pahov3.Message {
	t.Helper()
	select {
	case m := <-c.C:
		return m
	case <-time.After(waitTimeout):
		t.Fatal("no message")
	}
	return nil
}

// v5 is a paho.golang (MQTT 5) client whose messages arrive on C.
type v5 struct {
	*paho.Client
	C       chan *paho.Publish
	Connack *paho.Connack
}

func (br *broker) dial5(id string, mod ...func(*paho.Connect)) *v5 {
	t := br.t
	t.Helper()
	nc, err := net.Dial("tcp", br.addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &v5{C: make(chan *paho.Publish, 1000)}
	c.Client = paho.NewClient(paho.ClientConfig{
		ClientID: id,
		Conn:     nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { c.C <- pr.Packet; return true, nil },
		},
	})
	cp := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}
	for _, m := range mod {
		m(cp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	c.Connack, err = c.Connect(ctx, cp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{})
		select {
		case <-c.Done():
		case <-time.After(waitTimeout):
			t.Error("paho client did not stop")
		}
	})
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return c
}

func (c *v5) sub(t *testing.T, filter string, qos byte) {
	t.Helper()
	sa, err := c.Subscribe(ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if err != nil {
		t.Fatal(err)
	}
	if sa.Reasons[0] != qos {
		t.Fatalf("subscribe %q: reason %#x, want %d", filter, sa.Reasons[0], qos)
	}
}

func (c *v5) next(t *testing.T) *paho.Publish {
	t.Helper()
	select {
	case m := <-c.C:
		return m
	case <-time.After(waitTimeout):
		t.Fatal("no message")
	}
	return nil
}

// raw is a hand-driven MQTT connection, for what a library client hides.
type raw struct {
	t  *testing.T
	nc net.Conn
	r  *bufio.Reader
	v  byte
}

func (br *broker) dialRaw(id string, version byte, props packets.Properties) (*raw, packets.Packet) {
	br.t.Helper()
	return br.dialRawClean(id, version, true, props)
}

func (br *broker) dialRawClean(id string, version byte, clean bool, props packets.Properties) (*raw, packets.Packet) {
	br.t.Helper()
	return br.dialConnect(id, version, func(pk *packets.Packet) {
		pk.Connect.Clean = clean
		pk.Properties = props
	})
}

// dialConnect opens a raw connection and sends a CONNECT (clean, keepalive
// 30) that mod may change; it fails the test unless the CONNACK succeeds.
func (br *broker) dialConnect(id string, version byte, mod func(*packets.Packet)) (*raw, packets.Packet) {
	br.t.Helper()
	c, ack, err := br.tryConnect(id, version, mod)
	if err != nil || ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		br.t.Fatalf("CONNECT answered with %+v (%v)", ack, err)
	}
	return c, ack
}

// tryConnect is dialConnect returning whatever came back: a packet, or the
// read error (io.EOF: closed without an answer).
func (br *broker) tryConnect(id string, version byte, mod func(*packets.Packet)) (*raw, packets.Packet, error) {
	t := br.t
	t.Helper()
	nc, err := net.Dial("tcp", br.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(waitTimeout))
	c := &raw{t: t, nc: nc, r: bufio.NewReader(nc), v: version}
	name := "MQTT"
	if version == 3 {
		name = "MQIsdp"
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{
			ProtocolName: []byte(name), Clean: true, Keepalive: 30, ClientIdentifier: id,
		},
	}
	if mod != nil {
		mod(&pk)
	}
	c.send(pk)
	ack, err := c.tryRead()
	return c, ack, err
}

// waitUntil polls cond until it holds, failing the test with what after
// waitTimeout. Paho sends acks and DISCONNECTs after its calls return, so
// some states can only be waited for this way.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(waitTimeout)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("timed out waiting for " + what)
		}
	}
}

// queueInfo returns queue's state, failing the test if it has none.
func queueInfo(t *testing.T, b *engine.Broker, queue string) engine.QueueInfo {
	t.Helper()
	q, err := b.QueueInfo(queue)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func (c *raw) send(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = c.v
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(&buf)
	case packets.Pubrel:
		pk.FixedHeader.Qos = 1 // the fixed header flags PUBREL requires
		err = pk.PubrelEncode(&buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.nc.Write(buf.Bytes()); err != nil {
		c.t.Fatal(err)
	}
}

// read reads one packet; io.EOF (the server closed) gives a zero packet.
func (c *raw) read() packets.Packet {
	c.t.Helper()
	pk, err := c.tryRead()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return pk
}

func (c *raw) tryRead() (packets.Packet, error) {
	var pk packets.Packet
	b, err := c.r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(b); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(c.r)
	if err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(c.r, body); err != nil {
		return pk, err
	}
	pk.ProtocolVersion = c.v
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubrel:
		err = pk.PubrelDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	}
	return pk, err
}

func (c *raw) publish(topic string, qos byte, id uint16, body string) {
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic, PacketID: id, Payload: []byte(body),
	})
}

func (c *raw) subscribe(id uint16, filter string, qos byte) {
	c.t.Helper()
	c.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:    id,
		Filters:     packets.Subscriptions{{Filter: filter, Qos: qos}},
	})
	ack := c.read()
	if ack.FixedHeader.Type != packets.Suback || ack.ReasonCodes[0] != qos {
		c.t.Fatalf("SUBSCRIBE answered with %+v", ack)
	}
}

func (c *raw) puback(id uint16) {
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id})
}

// ack sends a PUBACK, PUBREC, PUBREL or PUBCOMP.
func (c *raw) ack(typ byte, id uint16) {
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: typ}, PacketID: id})
}

// expect reads one packet and checks its type, id and reason code.
func (c *raw) expect(typ byte, id uint16, code byte) packets.Packet {
	c.t.Helper()
	pk := c.read()
	if pk.FixedHeader.Type != typ || pk.PacketID != id || pk.ReasonCode != code {
		c.t.Fatalf("got type %d id %d reason %#x, want type %d id %d reason %#x", pk.FixedHeader.Type, pk.PacketID, pk.ReasonCode, typ, id, code)
	}
	return pk
}

// sessionQueue returns the info of the one clean-session queue there is.
func (br *broker) sessionQueue() engine.QueueInfo {
	br.t.Helper()
	var found []engine.QueueInfo
	for _, q := range br.b.Queues() {
		if strings.HasPrefix(q.Name, "$mqtt-clean/") {
			found = append(found, q)
		}
	}
	if len(found) != 1 {
		br.t.Fatalf("want one session queue, have %+v", found)
	}
	return found[0]
}

// gateStore holds synced store writes that carry queue entries while it
// is closed, so a test can see what happens before the fsync returns.
type gateStore struct {
	*memstore.Store
	mu      sync.Mutex
	closed  bool
	entered chan struct{} // one signal per held write
	release chan struct{} // closed by open to let held writes through
	once    sync.Once
}

// open lets every held write through, now and later.
func (g *gateStore) open() { g.once.Do(func() { close(g.release) }) }

func newGateStore() *gateStore {
	return &gateStore{Store: memstore.New(), entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (g *gateStore) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

func (g *gateStore) Apply(b *engine.Batch, sync bool) error {
	g.mu.Lock()
	hold := g.closed && sync && hasEntry(b)
	g.mu.Unlock()
	if hold {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.Store.Apply(b, sync)
}

func hasEntry(b *engine.Batch) bool {
	for _, op := range b.Ops {
		if op.Kind == engine.OpPutEntry {
			return true
		}
	}
	return false
}
