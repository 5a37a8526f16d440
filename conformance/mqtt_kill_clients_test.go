package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pahopackets "github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/session/state"
	"github.com/eclipse/paho.golang/paho/store/memory"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The clients of the MQTT kill tests (mqtt_kill_test.go): a ledger of what
// publishers were told, an inbox of what subscribers' applications were
// handed, paho.golang (MQTT 5) and paho.mqtt.golang (MQTT 3.1.1) clients,
// and a sniffer that decodes what the broker sends a subscriber.

// mqttPacketTimeout bounds one paho.golang request (CONNECT, SUBSCRIBE, a
// PUBLISH's whole flow). A QoS 2 publish caught by the kill waits in its
// session for the reconnect to the restarted broker, so this must cover a
// restart.
const mqttPacketTimeout = 30 * time.Second

// mqttLedger is what the publishers of one test were told, by message
// body. Bodies are "<publisher>-<number> <padding>", unique in a test.
type mqttLedger struct {
	mu     sync.Mutex
	frozen bool            // set by freeze: later results are ignored
	killed bool            // set by markKilled
	sent   map[string]bool // handed to the client library
	acked  map[string]bool // PUBACK (QoS 1) or PUBCOMP (QoS 2) arrived
	// ackedLate counts the acks recorded after markKilled: for a
	// publisher that reconnects, those the restarted broker sent.
	ackedLate int
	// unknownID counts the acks that were a PUBCOMP with reason code
	// 0x92 (see publishV5).
	unknownID int
	changed   chan struct{} // capacity 1: "something was recorded"
}

func newMQTTLedger() *mqttLedger {
	return &mqttLedger{sent: map[string]bool{}, acked: map[string]bool{}, changed: make(chan struct{}, 1)}
}

func (l *mqttLedger) send(body string) {
	l.mu.Lock()
	if !l.frozen {
		l.sent[body] = true
	}
	l.mu.Unlock()
}

func (l *mqttLedger) ack(body string) {
	l.mu.Lock()
	if !l.frozen {
		l.acked[body] = true
		if l.killed {
			l.ackedLate++
		}
	}
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

func (l *mqttLedger) ackUnknownID(body string) {
	l.mu.Lock()
	if !l.frozen {
		l.unknownID++
	}
	l.mu.Unlock()
	l.ack(body)
}

func (l *mqttLedger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// markKilled notes the kill and returns the number of acks so far.
func (l *mqttLedger) markKilled() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.killed = true
	return len(l.acked)
}

// mqttSnapshot is a frozen mqttLedger.
type mqttSnapshot struct {
	sent, acked          map[string]bool
	ackedLate, unknownID int
}

// freeze stops recording and returns what was recorded. The maps are no
// longer written once frozen.
func (l *mqttLedger) freeze() mqttSnapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.frozen = true
	return mqttSnapshot{sent: l.sent, acked: l.acked, ackedLate: l.ackedLate, unknownID: l.unknownID}
}

// waitAcks waits until n acks are recorded or limit passes; it reports
// whether they were.
func (l *mqttLedger) waitAcks(n int, limit time.Duration) bool {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for l.count() < n {
		select {
		case <-l.changed:
		case <-deadline.C:
			return false
		}
	}
	return true
}

// inbox counts the messages a subscriber's application was handed, by
// body.
type inbox struct {
	mu     sync.Mutex
	got    map[string]int
	total  int
	notify chan struct{} // capacity 1: "a message arrived"
}

func newInbox() *inbox { return &inbox{got: map[string]int{}, notify: make(chan struct{}, 1)} }

func (in *inbox) add(body string) {
	in.mu.Lock()
	in.got[body]++
	in.total++
	in.mu.Unlock()
	select {
	case in.notify <- struct{}{}:
	default:
	}
}

// snapshot returns a copy of the counts and their total.
func (in *inbox) snapshot() (map[string]int, int) {
	in.mu.Lock()
	defer in.mu.Unlock()
	got := make(map[string]int, len(in.got))
	for body, n := range in.got {
		got[body] = n
	}
	return got, in.total
}

// waitTotal waits until n messages arrived or limit passes; it reports
// whether they did.
func (in *inbox) waitTotal(n int, limit time.Duration) bool {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		in.mu.Lock()
		total := in.total
		in.mu.Unlock()
		if total >= n {
			return true
		}
		select {
		case <-in.notify:
		case <-deadline.C:
			return false
		}
	}
}

// drainInbox waits until in holds every body of want and marker, which was
// published behind them after the restart (a session queue is FIFO, so
// anything the queue held came before the marker). Once the marker is in,
// missing messages get markerGrace to show up. It returns how many of
// want are still missing.
func drainInbox(t *testing.T, name string, in *inbox, want map[string]bool, marker string, timeout time.Duration) int {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var grace <-chan time.Time
	for {
		in.mu.Lock()
		seenMarker := in.got[marker] > 0
		missing := 0
		for body := range want {
			if in.got[body] == 0 {
				missing++
			}
		}
		in.mu.Unlock()
		if seenMarker && missing == 0 {
			return 0
		}
		if seenMarker && grace == nil {
			grace = time.After(markerGrace)
		}
		select {
		case <-in.notify:
		case <-grace:
			t.Logf("%s: %d expected messages still missing %v after the marker arrived", name, missing, markerGrace)
			return missing
		case <-deadline.C:
			t.Logf("%s: gave up after %v (marker seen: %v, %d expected messages missing)", name, timeout, seenMarker, missing)
			return missing
		}
	}
}

// v5 is a paho.golang (MQTT 5) client. Its session state (packet ids of
// unfinished flows, the PUBLISH and PUBREL packets to re-send) outlives
// each connection, as a persistent session's must, so connect may be
// called again after the connection is lost.
type v5 struct {
	id  string
	st  *state.State
	out *memory.Store // st's store of PUBLISH and PUBREL packets awaiting their flow's end
	in  *inbox        // receives what the application is handed; nil for a publisher
	c   *paho.Client  // the current connection's client
	// manualAck leaves received messages unacknowledged (no PUBACK or
	// PUBREC is ever sent).
	manualAck bool
}

// newV5 returns a client whose session state stays in memory.
func newV5(id string, in *inbox) *v5 {
	out := memory.New()
	return &v5{id: id, st: state.New(out, memory.New()), out: out, in: in}
}

// connect dials addr and sends CONNECT with the given Clean Start and
// Session Expiry Interval (0: the session ends with the connection).
// wrap, if not nil, wraps the TCP connection.
func (v *v5) connect(addr string, clean bool, expiry uint32, wrap func(net.Conn) net.Conn) (*paho.Connack, error) {
	nc, err := net.DialTimeout("tcp", addr, mqttPacketTimeout)
	if err != nil {
		return nil, err
	}
	if wrap != nil {
		nc = wrap(nc)
	}
	cfg := paho.ClientConfig{ClientID: v.id, Conn: nc, Session: v.st, PacketTimeout: mqttPacketTimeout,
		EnableManualAcknowledgment: v.manualAck}
	if v.in != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { v.in.add(string(pr.Packet.Payload)); return true, nil },
		}
	}
	v.c = paho.NewClient(cfg)
	cp := &paho.Connect{ClientID: v.id, CleanStart: clean, KeepAlive: 30}
	if expiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	}
	ctx, cancel := context.WithTimeout(context.Background(), mqttPacketTimeout)
	defer cancel()
	return v.c.Connect(ctx, cp)
}

// subscribe subscribes to filter and checks the granted QoS.
func (v *v5) subscribe(filter string, qos byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), mqttPacketTimeout)
	defer cancel()
	sa, err := v.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if err != nil {
		return err
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] != qos {
		return fmt.Errorf("subscribe %q: reason codes %v, want [%d]", filter, sa.Reasons, qos)
	}
	return nil
}

// disconnect sends DISCONNECT and waits for the client to stop.
func (v *v5) disconnect(t *testing.T) {
	t.Helper()
	_ = v.c.Disconnect(&paho.Disconnect{})
	v.waitGone(t)
}

// waitGone waits for the client to stop (its connection dropped); then
// every message it received has been handed to the application and
// recorded in the session state.
func (v *v5) waitGone(t *testing.T) {
	t.Helper()
	select {
	case <-v.c.Done():
	case <-time.After(mqttPacketTimeout):
		t.Fatalf("%s: paho client did not stop within %v", v.id, mqttPacketTimeout)
	}
}

// unfinished returns the number of the session's own PUBLISH and PUBREL
// packets whose flow has not ended.
func (v *v5) unfinished() int {
	ids, err := v.out.List()
	if err != nil {
		return -1
	}
	return len(ids)
}

// waitFinished waits until every flow of the session ended or limit
// passes, and returns the number left. It polls: paho.golang answers a
// publish before it deletes the flow from its store, and says nothing
// when it does.
func (v *v5) waitFinished(limit time.Duration) int {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		n := v.unfinished()
		if n == 0 {
			return 0
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return n
		}
	}
}

// publishV5 publishes numbered messages from workers goroutines sharing
// c, so up to workers publishes are in flight, until ctx ends, a publish
// fails (the kill) or max are sent. topic picks each message's topic.
//
// Each Publish runs with flowCtx, and mqttPacketTimeout bounds it. For a
// persistent session that reconnects, flowCtx outlives ctx: a publish
// caught by the kill stays in the session state and completes (PUBCOMP)
// after the reconnect, and that counts. Otherwise flowCtx is ctx: when
// the connection of a session that ends with it is lost, paho.golang
// v0.23.0 drops its flows without answering the publishes waiting on them
// (State.clean), which would wait for mqttPacketTimeout.
func publishV5(ctx, flowCtx context.Context, c *paho.Client, name string, qos byte, workers, max int, topic func(i int) string, l *mqttLedger) {
	pad := strings.Repeat("x", 64)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= max {
					return
				}
				body := fmt.Sprintf("%s-%07d %s", name, i, pad)
				l.send(body)
				pr, err := c.Publish(flowCtx, &paho.Publish{QoS: qos, Topic: topic(i), Payload: []byte(body)})
				if err != nil || pr == nil {
					return // the broker is gone
				}
				switch {
				case qos == 2 && pr.ReasonCode == 0x92:
					// PUBCOMP "Packet Identifier not found": the flow had
					// reached PUBREL (so the broker had PUBRECed the
					// message) and the broker had already completed it
					// when the PUBREL came again after the reconnect.
					// Only a PUBCOMP carries 0x92, never a PUBREC.
					l.ackUnknownID(body)
				case pr.ReasonCode >= 0x80:
					// An MQTT 5 refusal is not an ack (and cannot be a
					// kill: it came from the broker).
				default:
					l.ack(body)
				}
			}
		})
	}
	wg.Wait()
}

// publishV3 publishes numbered QoS 1 messages with paho.mqtt.golang (MQTT
// 3.1.1, clean session, client id id) with up to window publishes in
// flight, until ctx ends, the connection is lost (the kill) or max are
// sent.
func publishV3(ctx context.Context, t *testing.T, addr, id, name, topic string, window, max int, l *mqttLedger) {
	c := pahov3.NewClient(pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetKeepAlive(30 * time.Second).SetWriteTimeout(5 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(mqttWait) || tok.Error() != nil {
		t.Errorf("%s: connect: %v", name, tok.Error())
		return
	}
	defer c.Disconnect(0)
	type pending struct {
		body string
		tok  pahov3.Token
	}
	inflight := make(chan pending, window)
	acker := make(chan struct{})
	go func() {
		defer close(acker)
		for p := range inflight {
			// After the kill paho completes every token with an error
			// (clean session, no reconnect).
			if p.tok.WaitTimeout(mqttPacketTimeout) && p.tok.Error() == nil {
				l.ack(p.body)
			}
		}
	}()
	pad := strings.Repeat("x", 64)
	for i := 0; i < max && ctx.Err() == nil && c.IsConnected(); i++ {
		body := fmt.Sprintf("%s-%07d %s", name, i, pad)
		l.send(body)
		inflight <- pending{body, c.Publish(topic, 1, false, body)}
	}
	close(inflight)
	<-acker
}

// dialV3Session connects a paho.mqtt.golang (MQTT 3.1.1) client with clean
// session 0 whose application hands every message to in, and returns the
// CONNACK's session present.
func dialV3Session(addr, id string, in *inbox) (pahov3.Client, bool, error) {
	c := pahov3.NewClient(pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetProtocolVersion(4).SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(false).
		SetKeepAlive(30 * time.Second).SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) { in.add(string(m.Payload())) }))
	tok := c.Connect()
	if !tok.WaitTimeout(mqttWait) {
		return nil, false, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, false, err
	}
	return c, tok.(*pahov3.ConnectToken).SessionPresent(), nil
}

// publishMarker publishes body to each topic with a fresh MQTT 5 client
// and waits for the acks.
func publishMarker(t *testing.T, addr string, qos byte, body string, topics ...string) {
	t.Helper()
	m := newV5("marker", nil)
	if _, err := m.connect(addr, true, 0, nil); err != nil {
		t.Fatalf("marker: connect: %v", err)
	}
	defer m.disconnect(t)
	for _, topic := range topics {
		ctx, cancel := context.WithTimeout(context.Background(), mqttPacketTimeout)
		pr, err := m.c.Publish(ctx, &paho.Publish{QoS: qos, Topic: topic, Payload: []byte(body)})
		cancel()
		if err != nil || pr.ReasonCode >= 0x80 {
			t.Fatalf("marker to %s: %v (%+v)", topic, err, pr)
		}
	}
}

// sniffer decodes the MQTT 5 packets a client reads, to see what the
// broker sends it beneath the client library: each PUBLISH's packet id and
// DUP flag, and the PUBRELs.
type sniffer struct {
	mu    sync.Mutex
	phase int // 0 before the kill, 1 after the restart
	buf   []byte
	err   error // decoding failed: nothing more is decoded
	// firstID is the packet id each body had when first sent before the
	// kill.
	firstID map[string]uint16
	// open are the packet ids of PUBLISHes since the restart.
	open  map[uint16]bool
	after snifferCounts
}

// snifferCounts is what the sniffer saw after the restart.
type snifferCounts struct {
	publishes, dupFlag int
	// pubrels are the PUBRELs of flows begun before the kill (for a
	// packet id not sent in a PUBLISH since).
	pubrels int
	// resent are PUBLISHes of bodies sent before the kill; sameID those of
	// them with their first packet id and DUP 1, as [MQTT-4.4.0-1] and
	// [MQTT-3.3.1-1] require. wrong names the others.
	resent, sameID int
	wrong          []string
}

func newSniffer() *sniffer { return &sniffer{firstID: map[string]uint16{}, open: map[uint16]bool{}} }

// wrap is a connect wrap function.
func (s *sniffer) wrap(nc net.Conn) net.Conn {
	// paho.golang writes from several goroutines: with a wrapped conn its
	// packets are written whole only if the conn is a sync.Locker.
	return pahopackets.NewThreadSafeConn(&sniffConn{Conn: nc, s: s})
}

// restarted starts the second phase, for the connection to the restarted
// broker.
func (s *sniffer) restarted() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.phase, s.buf = 1, nil
}

func (s *sniffer) counts() (snifferCounts, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.after, s.err
}

type sniffConn struct {
	net.Conn
	s *sniffer
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.s.feed(p[:n])
	}
	return n, err
}

// feed decodes the complete packets in what was read so far.
func (s *sniffer) feed(p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.buf = append(s.buf, p...)
	for len(s.buf) >= 2 {
		size, lenBytes, err := packets.DecodeLength(bytes.NewReader(s.buf[1:]))
		if errors.Is(err, io.EOF) {
			return // the length is not all there yet
		}
		if err != nil {
			s.err = fmt.Errorf("sniffer: remaining length: %w", err)
			return
		}
		end := 1 + lenBytes + size
		if len(s.buf) < end {
			return
		}
		pk := packets.Packet{ProtocolVersion: 5}
		if err := pk.FixedHeader.Decode(s.buf[0]); err != nil {
			s.err = fmt.Errorf("sniffer: fixed header %#x: %w", s.buf[0], err)
			return
		}
		switch pk.FixedHeader.Type {
		case packets.Publish:
			if err := pk.PublishDecode(s.buf[1+lenBytes : end]); err != nil {
				s.err = fmt.Errorf("sniffer: PUBLISH: %w", err)
				return
			}
			s.publish(string(pk.Payload), pk.PacketID, pk.FixedHeader.Dup)
		case packets.Pubrel:
			if err := pk.PubrelDecode(s.buf[1+lenBytes : end]); err != nil {
				s.err = fmt.Errorf("sniffer: PUBREL: %w", err)
				return
			}
			if s.phase == 1 && !s.open[pk.PacketID] {
				s.after.pubrels++
			}
			delete(s.open, pk.PacketID)
		}
		s.buf = s.buf[end:]
	}
}

func (s *sniffer) publish(body string, id uint16, dup bool) {
	if s.phase == 0 {
		if _, ok := s.firstID[body]; !ok {
			s.firstID[body] = id
		}
		return
	}
	a := &s.after
	a.publishes++
	s.open[id] = true
	if dup {
		a.dupFlag++
	}
	first, ok := s.firstID[body]
	if !ok {
		return
	}
	a.resent++
	if dup && id == first {
		a.sameID++
		return
	}
	name, _, _ := strings.Cut(body, " ")
	a.wrong = append(a.wrong, fmt.Sprintf("%s: packet id %d (first %d), DUP %v", name, id, first, dup))
}
