package mqtt

import (
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/protocol"
)

// conn is one MQTT connection and its session (clean, or a persistent
// session it holds, session.go).
//
// The read goroutine (mochi's, calling the hooks) owns subscription
// changes; mu guards what the writer reads of them.
type conn struct {
	s      *Server
	cl     *mochi.Client
	nc     net.Conn
	v5     bool
	origin string // engine.Message.Origin of this client's publishes
	log    zerolog.Logger
	credit int // outbound QoS 1 window

	// Session, fixed at CONNECT: sess is nil for a clean session.
	sess      *session
	present   bool               // CONNACK session present
	reqExpiry uint32             // MQTT 5 Session Expiry Interval asked for
	expiry    uint32             // granted (capped)
	will      *willRecord        // the CONNECT's will, stored; nil for none
	ident     *protocol.Identity // nil without Config.Auth: everything allowed
	release   func()             // the connection's Limiter slot (teardown)

	// normal is set by a DISCONNECT that discards the will (MQTT 3.1.1, or
	// MQTT 5 reason 0x00).
	normal atomic.Bool

	pipe *pipeline
	out  *outbox

	// inQoS counts QoS 1 publishes read and not yet acked, and QoS 2 ones
	// not yet completed (MQTT 5 Receive Maximum [MQTT-3.3.4-7]).
	inQoS atomic.Int32
	// closing is set once closeInOrder began (tests wait for it).
	closing atomic.Bool
	// aliases are the client's topic aliases (read goroutine only).
	aliases map[uint16]string
	// q2in are the inbound QoS 2 ids awaiting PUBREL (qos2.go); a
	// persistent session's map is the session's.
	q2mu sync.Mutex
	q2in map[uint16]bool

	mu   sync.Mutex
	subs map[string]subOpts
	// topic holds the QoS 0 filters (in memory, one copy per message
	// however many match).
	topic *engine.TopicSub
	// queue is the connection's session queue, bound to every QoS 1
	// filter: "$mqtt/<client id>" (durable) for a persistent session, a
	// temporary queue for a clean one. "" until needed.
	queue string
	// cons are the connection's consumers by engine queue: the session
	// queue, $queue/NAME queues and $share/ group queues.
	cons map[string]*engine.Consumer

	started      bool // pipeline and writer running
	torn         bool // teardown began: start must not run them
	gone         chan struct{}
	teardownOnce sync.Once
}

// subKind says what a subscription is.
type subKind uint8

const (
	kindTopic subKind = iota // a topic filter
	kindQueue                // $queue/NAME: a competing consumer of queue NAME
	kindShare                // $share/GROUP/FILTER: a member of a group queue
)

// subOpts is one subscription of the connection.
type subOpts struct {
	qos     byte
	noLocal bool
	rap     bool // Retain As Published
	id      int  // MQTT 5 subscription identifier, 0 for none
	// bound is set while the filter is bound to the session queue: a topic
	// (QoS 0) delivery it matches is then left to the queue's copy.
	bound bool
	kind  subKind
	queue string // engine queue of a kindQueue or kindShare subscription
}

func newConn(s *Server, cl *mochi.Client) *conn {
	c := &conn{
		s:      s,
		cl:     cl,
		nc:     cl.Net.Conn,
		v5:     cl.Properties.ProtocolVersion == 5,
		origin: "mqtt:" + cl.ID,
		subs:   make(map[string]subOpts),
		cons:   make(map[string]*engine.Consumer),
		q2in:   make(map[uint16]bool),
		gone:   make(chan struct{}),
	}
	c.log = s.log.With().Str("client", cl.ID).Str("remote", cl.Net.Remote).Logger()
	c.credit = s.cfg.MaxInflight
	if rm := int(cl.Properties.Props.ReceiveMaximum); c.v5 && rm > 0 {
		c.credit = min(rm, c.credit)
	}
	c.pipe = newPipeline(c)
	c.out = newOutbox(c)
	return c
}

// start runs the pipeline and the writer; false after teardown.
func (c *conn) start() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.torn {
		return false
	}
	c.started = true
	c.s.wg.Add(2)
	go func() {
		defer c.s.wg.Done()
		c.pipe.run()
	}()
	go func() {
		defer c.s.wg.Done()
		c.out.run()
	}()
	return true
}

// teardown ends the connection's engine state and joins its goroutines;
// a persistent session is released to wait for its client. It runs in
// the read goroutine once mochi's read loop ended (or in serveConn for a
// connection that never got established).
func (c *conn) teardown() {
	c.teardownOnce.Do(func() {
		defer close(c.gone)
		c.cl.Stop(nil) // the writer's socket writes fail from now on
		c.mu.Lock()
		started := c.started
		c.torn = true
		topic, cons, queue := c.topic, c.cons, c.queue
		c.topic, c.cons, c.queue = nil, map[string]*engine.Consumer{}, ""
		var shares []string
		for k, o := range c.subs {
			if o.kind == kindShare {
				shares = append(shares, k)
			}
		}
		c.mu.Unlock()
		if started {
			c.pipe.close()
		}
		c.endWill() // after the connection's own publishes
		if topic != nil {
			topic.Close()
		}
		for _, cn := range cons {
			_ = cn.Close() // unacked deliveries return to their queue
		}
		if queue != "" && c.sess == nil {
			if err := c.s.b.DeleteQueue(queue); err != nil && !errors.Is(err, engine.ErrNoQueue) && !errors.Is(err, engine.ErrClosed) {
				c.log.Warn().Err(err).Str("queue", queue).Msg("deleting session queue")
			}
		}
		if started {
			c.out.close()
		} else {
			c.out.shut()
		}
		c.s.releaseSession(c)
		c.s.releaseShares(shares)
		c.s.detach(c)
		if c.release != nil {
			c.release()
		}
	})
}

// takenOver ends a connection whose session a new connection takes
// (MQTT 5: DISCONNECT 0x8E).
func (c *conn) takenOver() {
	c.disconnect(packets.ErrSessionTakenOver)
}

// closeInOrder ends the connection from its read goroutine after what it
// owes the client: the acks of the publishes read before (committed
// first), then, for MQTT 5, DISCONNECT with code; then the close. mochi's
// DisconnectClient would write the DISCONNECT ahead of acks still queued,
// which would be lost, and the client would send those messages again.
func (c *conn) closeInOrder(code packets.Code) {
	c.closing.Store(true)
	c.pipe.barrier()
	if c.v5 {
		c.out.control(encode(packets.Packet{
			FixedHeader:     packets.FixedHeader{Type: packets.Disconnect},
			ReasonCode:      code.Code,
			ProtocolVersion: 5,
		}))
	}
	c.out.flush(writeTimeout)
	c.lingerClose()
	c.cl.Stop(code)
}

// Bounds of a lingering close.
const (
	lingerTimeout = 2 * time.Second
	lingerBytes   = 1 << 20
)

// lingerClose half-closes the connection and reads what the client still
// sends, for at most lingerTimeout and lingerBytes, before it is closed. A
// client that answers the PUBRECs it finds before the DISCONNECT (with
// PUBRELs) would otherwise have them hit a closed socket, and the reset
// that comes back discards the DISCONNECT still unread in its buffer. Only
// the read goroutine may call it (it reads the socket itself).
func (c *conn) lingerClose() {
	cw, ok := c.nc.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	if c.nc.SetReadDeadline(time.Now().Add(lingerTimeout)) != nil {
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(c.nc, lingerBytes))
}

// disconnect ends the connection with an MQTT 5 DISCONNECT reason code
// (just a close for MQTT 3.1.1).
func (c *conn) disconnect(code packets.Code) {
	if c.v5 {
		_ = c.s.ms.DisconnectClient(c.cl, code)
		return
	}
	c.cl.Stop(code)
}

// checkPublish refuses, before mochi handles it, a PUBLISH over Receive
// Maximum, and answers one to $SYS itself.
func (c *conn) checkPublish(pk packets.Packet) (packets.Packet, error) {
	if a := pk.Properties.TopicAlias; c.v5 && pk.Properties.TopicAliasFlag && a > 0 && int(a) <= c.s.cfg.TopicAliasMax {
		// Topic aliases (MQTT 5 §3.3.2.3.4) are resolved here, before the
		// checks below need the topic: mochi would resolve an alias this
		// connection never set to "" and the publish would be refused as
		// a bad topic, where the spec says protocol error [MQTT-3.3.2-7,
		// §3.3.4]. Bounded by Config.TopicAliasMax.
		if pk.TopicName == "" {
			topic, ok := c.aliases[a]
			if !ok {
				c.closeInOrder(packets.ErrProtocolViolation)
				return pk, packets.ErrRejectPacket
			}
			pk.TopicName = topic
		} else {
			if c.aliases == nil {
				c.aliases = make(map[uint16]string)
			}
			c.aliases[a] = pk.TopicName
		}
	}
	qos := pk.FixedHeader.Qos
	resent := qos == 2 && c.hasReceived(pk.PacketID) // answered again, not counted
	switch {
	case qos > 0 && !resent && c.v5 && int(c.inQoS.Load()) >= c.s.cfg.ReceiveMaximum:
		c.closeInOrder(packets.ErrReceiveMaximum)
		return pk, packets.ErrRejectPacket
	case qos > 0 && isSysTopic(pk.TopicName):
		// mochi drops a publish to $SYS without an ack, leaving a QoS 1
		// or 2 publisher waiting for ever: refuse it here, in order with
		// the other acks (v5 0x87; v3 acked and dropped).
		c.inQoS.Add(1)
		c.pipe.push(pubItem{qos: qos, pid: pk.PacketID, err: errSysTopic})
		return handled(pk), nil
	}
	return pk, nil
}

// errSysTopic refuses a publish to $SYS/..., which only a broker may use
// (MQTT 4.7.2).
var errSysTopic = errors.New("mqtt: $SYS topics are reserved for the broker")

// isSysTopic is mochi's test for the topics it will not accept.
func isSysTopic(topic string) bool {
	return len(topic) >= 4 && strings.EqualFold(topic[:4], "$SYS")
}

// publish hands a PUBLISH to the pipeline (blocking while it is full,
// which stops this connection's reads).
func (c *conn) publish(pk packets.Packet) {
	qos := pk.FixedHeader.Qos
	if qos == 2 && c.received(pk.PacketID) {
		// A re-send of a publish awaiting PUBREL: PUBREC again, in order,
		// and nothing published [MQTT-4.3.3-10].
		c.pipe.push(pubItem{qos: 2, pid: pk.PacketID, resent: true})
		return
	}
	if qos > 0 {
		c.inQoS.Add(1)
	}
	if !c.mayPublish(pk.TopicName) {
		c.log.Info().Str("topic", pk.TopicName).Msg("publish refused: not authorized")
		if qos == 0 {
			if !c.v5 {
				c.cl.Stop(errNotAuthorized) // MQTT 3.1.1 cannot say why
			}
			return // MQTT 5: a QoS 0 publish has no ack to carry the refusal
		}
		c.pipe.push(pubItem{qos: qos, pid: pk.PacketID, err: errNotAuthorized})
		return
	}
	c.pipe.push(pubItem{m: c.message(&pk, time.Now()), qos: qos, pid: pk.PacketID})
}

// subscribe handles a valid SUBSCRIBE: engine state for each filter, the
// session record, then the SUBACK.
func (c *conn) subscribe(pk packets.Packet) {
	c.pipe.barrier() // this client's earlier publishes are routed first
	c.out.pause()    // deliveries of new subscriptions follow the SUBACK
	codes := make([]byte, len(pk.Filters))
	had := make([]bool, len(pk.Filters))
	for i, f := range pk.Filters {
		c.mu.Lock()
		_, had[i] = c.subs[f.Filter]
		c.mu.Unlock()
		codes[i] = c.subscribeOne(f)
	}
	if err := c.saveSubs(); err != nil {
		// The engine state is there but would not survive a restart.
		c.log.Error().Err(err).Msg("storing subscriptions")
		for i := range codes {
			codes[i] = packets.ErrUnspecifiedError.Code
		}
	}
	for i := range codes {
		if !c.v5 && codes[i] >= packets.ErrUnspecifiedError.Code {
			codes[i] = packets.ErrUnspecifiedError.Code // the only MQTT 3.1.1 failure code
		}
	}
	rets := c.retainedFor(pk.Filters, codes, had)
	c.out.resume(encode(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Suback},
		PacketID:        pk.PacketID,
		ReasonCodes:     codes,
		ProtocolVersion: c.cl.Properties.ProtocolVersion,
	}), rets...)
}

// restore re-creates the subscriptions of a resumed session (before any
// packet after CONNECT is read) and attaches its queue, whose backlog
// then flows within the client's window.
func (c *conn) restore() {
	ss := c.sess
	if ss == nil {
		return
	}
	if c.present {
		c.out.resumeQoS2() // PUBRELs first, and the ids of QoS 2 resends
	}
	c.s.sessMu.Lock()
	subs := append([]subRecord(nil), ss.rec.Subs...)
	c.s.sessMu.Unlock()
	// The writer waits until every subscription is back: a backlog
	// delivery checked against a filter not restored yet would be taken
	// for one unsubscribed since, and dropped.
	c.out.pause()
	defer c.out.resume(nil)
	for _, r := range subs {
		code := c.subscribeOne(packets.Subscription{Filter: r.Filter, Qos: r.QoS, NoLocal: r.NoLocal, RetainAsPublished: r.RAP, Identifier: r.ID})
		if code >= packets.ErrUnspecifiedError.Code {
			c.log.Error().Str("filter", r.Filter).Uint8("code", code).Msg("restoring subscription")
		}
	}
	if !c.present {
		return
	}
	queue, err := c.sessionQueue()
	if err != nil {
		c.log.Error().Err(err).Msg("attaching session queue")
		c.disconnect(packets.ErrUnspecifiedError)
		return
	}
	// A binding the record does not know (a SUBSCRIBE whose record write
	// failed) is removed.
	for _, bd := range c.s.b.Bindings() {
		if bd.Queue != queue {
			continue
		}
		c.mu.Lock()
		o, ok := c.subs[bd.Filter]
		c.mu.Unlock()
		if !ok || !o.bound {
			if err := c.s.b.Unbind(bd.Filter, queue); err != nil {
				c.log.Error().Err(err).Str("filter", bd.Filter).Msg("removing stale binding")
			}
		}
	}
}

// subscribeOne subscribes to one filter and returns its SUBACK code.
func (c *conn) subscribeOne(f packets.Subscription) byte {
	kind, queue, inner := kindTopic, "", f.Filter
	switch {
	case strings.HasPrefix(f.Filter, sharePrefix):
		group, filter, ok := strings.Cut(f.Filter[len(sharePrefix):], "/")
		if !ok || engine.ValidateFilter(filter) != nil {
			return packets.ErrTopicFilterInvalid.Code
		}
		q, err := protocol.SharedSubscriptionQueue(group, filter)
		if err != nil {
			return packets.ErrTopicFilterInvalid.Code
		}
		if f.NoLocal && c.v5 {
			// A protocol error [MQTT-3.8.3-4].
			c.disconnect(packets.ErrProtocolViolationInvalidSharedNoLocal)
			return packets.ErrProtocolViolationInvalidSharedNoLocal.Code
		}
		kind, queue, inner = kindShare, q, filter
	case strings.HasPrefix(f.Filter, queuePrefix):
		name := f.Filter[len(queuePrefix):]
		if engine.ValidateQueueName(name) != nil || strings.ContainsAny(name, "+#") {
			return packets.ErrTopicFilterInvalid.Code
		}
		kind, queue = kindQueue, name
	case engine.ValidateFilter(f.Filter) != nil:
		return packets.ErrTopicFilterInvalid.Code
	}
	permName := inner
	if kind == kindQueue {
		permName = queue
	}
	if !c.maySubscribe(kind, permName) {
		c.log.Info().Str("filter", f.Filter).Msg("subscription refused: not authorized")
		return packets.ErrNotAuthorized.Code
	}
	c.mu.Lock()
	old, had := c.subs[f.Filter]
	full := !had && len(c.subs) >= c.s.cfg.MaxSubscriptions
	c.mu.Unlock()
	if full {
		c.s.SubscriptionsRefused.Add(1)
		return packets.ErrQuotaExceeded.Code
	}
	qos := min(f.Qos, 2)
	opts := subOpts{qos: qos, noLocal: f.NoLocal, rap: f.RetainAsPublished, id: f.Identifier, kind: kind, queue: queue}
	var err error
	switch {
	case kind != kindTopic:
		err = c.toConsumer(f.Filter, inner, opts, had)
	case qos == 0:
		err = c.toTopic(f.Filter, opts, had && old.bound)
	default:
		err = c.toQueue(f.Filter, opts, had && !old.bound)
	}
	if err != nil {
		c.log.Warn().Err(err).Str("filter", f.Filter).Msg("subscribe")
		if errors.Is(err, engine.ErrInvalidFilter) || errors.Is(err, engine.ErrInvalidQueue) {
			return packets.ErrTopicFilterInvalid.Code
		}
		if errors.Is(err, engine.ErrTooManyQueues) {
			return packets.ErrQuotaExceeded.Code
		}
		return packets.ErrUnspecifiedError.Code
	}
	return qos
}

// sharePrefix starts a shared subscription filter.
const sharePrefix = "$share/"

// toConsumer makes the connection a competing consumer of a $queue/ queue
// or a $share/ group queue (declared durable and bound to the group's
// filter). A repeated SUBSCRIBE only updates its options.
func (c *conn) toConsumer(key, filter string, opts subOpts, had bool) error {
	c.mu.Lock()
	_, consuming := c.cons[opts.queue]
	if had && consuming {
		c.subs[key] = opts
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	if opts.kind == kindShare {
		// Under sessMu: releaseShareLocked must not delete the group queue
		// between its declaration and this member's consumer.
		c.s.sessMu.Lock()
		defer c.s.sessMu.Unlock()
		if err := c.s.b.DurableSubscription(opts.queue, filter, engine.QueueOptions{}); err != nil {
			return err
		}
	}
	c.mu.Lock()
	c.subs[key] = opts
	c.mu.Unlock()
	cons, err := c.s.b.Consume(opts.queue, sink{c}, engine.ConsumeOptions{Credit: c.credit})
	if err != nil {
		c.forget(key)
		return err
	}
	c.mu.Lock()
	c.cons[opts.queue] = cons
	c.mu.Unlock()
	return nil
}

// toTopic makes filter a QoS 0 subscription (in the topic subscription).
// Moving it from the queue may deliver a message twice, never lose one.
func (c *conn) toTopic(filter string, opts subOpts, wasBound bool) error {
	opts.bound = wasBound
	c.mu.Lock()
	c.subs[filter] = opts
	if c.topic == nil {
		c.topic = c.s.b.SubscribeFilters(sink{c})
	}
	topic := c.topic
	c.mu.Unlock()
	if err := topic.AddFilter(filter); err != nil {
		c.forget(filter)
		return err
	}
	if wasBound {
		c.mu.Lock()
		opts.bound = false
		c.subs[filter] = opts
		queue := c.queue
		c.mu.Unlock()
		return c.s.b.Unbind(filter, queue)
	}
	return nil
}

// toQueue makes filter a QoS 1 subscription (bound to the session queue).
func (c *conn) toQueue(filter string, opts subOpts, wasTopic bool) error {
	queue, err := c.sessionQueue()
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.subs[filter] = opts // not bound yet: topic deliveries still go out
	c.mu.Unlock()
	if err := c.s.b.Bind(filter, queue); err != nil {
		c.forget(filter)
		return err
	}
	c.mu.Lock()
	opts.bound = true
	c.subs[filter] = opts
	topic := c.topic
	c.mu.Unlock()
	if wasTopic && topic != nil {
		topic.RemoveFilter(filter)
	}
	return nil
}

func (c *conn) forget(filter string) {
	c.mu.Lock()
	delete(c.subs, filter)
	c.mu.Unlock()
}

// sessionQueue returns the connection's session queue, declaring it and
// attaching the consumer on first use: "$mqtt/<client id>", durable, for
// a persistent session; a temporary queue for a clean one.
func (c *conn) sessionQueue() (string, error) {
	c.mu.Lock()
	q := c.queue
	c.mu.Unlock()
	if q != "" {
		return q, nil
	}
	cfg := &c.s.cfg
	var opts engine.QueueOptions
	if c.sess != nil {
		q = sessionQueueName(c.cl.ID)
		opts.Policy = c.s.sessionPolicy()
	} else {
		// Unique per connection: a takeover's old connection deletes its
		// own queue, never the new one's. '$' names cannot be read over
		// STOMP.
		q = "$mqtt-clean/" + strconv.FormatUint(c.s.nextConn.Add(1), 10) + "/" + c.cl.ID
		opts = engine.QueueOptions{Temporary: true, Policy: engine.Policy{
			MaxDeliveries:   -1, // a clean session cannot refuse for good
			MaxLength:       cfg.SessionQueueMaxLength,
			MaxBytes:        cfg.SessionQueueMaxBytes,
			Overflow:        engine.OverflowDropHead,
			DeadLetterQueue: "-",
		}}
	}
	if err := c.s.b.DeclareQueue(q, opts); err != nil {
		return "", err
	}
	cons, err := c.s.b.Consume(q, sink{c}, engine.ConsumeOptions{Credit: c.credit})
	if err != nil {
		if c.sess == nil {
			_ = c.s.b.DeleteQueue(q)
		}
		return "", err
	}
	c.mu.Lock()
	c.queue = q
	c.cons[q] = cons
	c.mu.Unlock()
	return q, nil
}

// unsubscribe handles a valid UNSUBSCRIBE.
func (c *conn) unsubscribe(pk packets.Packet) {
	c.pipe.barrier()
	codes := make([]byte, len(pk.Filters))
	var shares []string
	for i, f := range pk.Filters {
		c.mu.Lock()
		opts, ok := c.subs[f.Filter]
		if ok && opts.kind == kindShare {
			shares = append(shares, f.Filter)
		}
		delete(c.subs, f.Filter)
		topic, queue := c.topic, c.queue
		var cons *engine.Consumer
		if ok && opts.kind != kindTopic {
			cons = c.cons[opts.queue]
			delete(c.cons, opts.queue)
		}
		c.mu.Unlock()
		switch {
		case !ok:
			codes[i] = packets.CodeNoSubscriptionExisted.Code
		case cons != nil:
			_ = cons.Close() // unacked deliveries go back to the queue
		case opts.bound:
			if err := c.s.b.Unbind(f.Filter, queue); err != nil {
				c.log.Warn().Err(err).Str("filter", f.Filter).Msg("unsubscribe")
				codes[i] = packets.ErrUnspecifiedError.Code
			}
		case topic != nil:
			topic.RemoveFilter(f.Filter)
		}
	}
	if err := c.saveSubs(); err != nil {
		c.log.Error().Err(err).Msg("storing subscriptions")
		for i := range codes {
			codes[i] = packets.ErrUnspecifiedError.Code
		}
	} else {
		c.s.releaseShares(shares)
	}
	c.out.control(encode(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Unsuback},
		PacketID:        pk.PacketID,
		ReasonCodes:     codes,
		ProtocolVersion: c.cl.Properties.ProtocolVersion,
	}))
}

// clientPuback completes a QoS 1 delivery. An MQTT 5 PUBACK with a reason
// code of 0x80 or more refuses it: the message comes back (NACK), or goes
// to its queue's dead-letter queue after max_deliveries.
func (c *conn) clientPuback(pk packets.Packet) {
	fl, ok := c.out.puback(pk.PacketID)
	if !ok {
		return // not ours, or already completed
	}
	c.mu.Lock()
	cons := c.cons[fl.queue]
	c.mu.Unlock()
	if cons == nil {
		return // unsubscribed: the delivery went back to its queue
	}
	var err error
	if c.v5 && pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
		err = cons.Nack(fl.tag)
	} else {
		err = cons.Ack(false, fl.tag)
	}
	if err != nil && !errors.Is(err, engine.ErrClosed) {
		c.log.Debug().Err(err).Uint16("packet_id", pk.PacketID).Msg("puback")
	}
}

// match is what a connection's subscriptions say about one message.
type match struct {
	any, bound bool
	rap        bool // a matching subscription has Retain As Published
	qos        byte
	allNoLocal bool
	ids        []int
}

// matchLocked evaluates the topic subscriptions against topic.
func (c *conn) matchLocked(topic string) match {
	mt := match{allNoLocal: true}
	for f, o := range c.subs {
		if o.kind != kindTopic || !engine.MatchTopic(f, topic) {
			continue
		}
		mt.any = true
		mt.bound = mt.bound || o.bound
		mt.rap = mt.rap || o.rap
		mt.qos = max(mt.qos, o.qos)
		mt.allNoLocal = mt.allNoLocal && o.noLocal
		if o.id > 0 {
			mt.ids = append(mt.ids, o.id)
		}
	}
	return mt
}

// consumerSubLocked returns the $queue/ or $share/ subscription consuming
// queue.
func (c *conn) consumerSubLocked(queue string) (subOpts, bool) {
	for _, o := range c.subs {
		if o.kind != kindTopic && o.queue == queue {
			return o, true
		}
	}
	return subOpts{}, false
}

// sink receives the connection's engine deliveries (topic subscription and
// queues) and hands them to the writer. It runs under engine locks.
type sink struct{ c *conn }

func (s sink) Deliver(d engine.Delivery) { s.c.out.deliver(d) }
