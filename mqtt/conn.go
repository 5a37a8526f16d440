package mqtt

import (
	"errors"
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
)

// conn is one established MQTT connection and its (clean) session.
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

	pipe *pipeline
	out  *outbox

	// inQoS counts QoS 1 publishes read and not yet acked (MQTT 5 Receive
	// Maximum [MQTT-3.3.4-7]).
	inQoS atomic.Int32

	mu   sync.Mutex
	subs map[string]subOpts
	// topic holds the QoS 0 filters (in memory, one copy per message
	// however many match).
	topic *engine.TopicSub
	// queue is the connection's session queue, bound to every QoS 1
	// filter: a temporary queue consumed with credit, so QoS 1 deliveries
	// wait in the engine rather than being dropped. "" until needed.
	queue string
	cons  *engine.Consumer

	teardownOnce sync.Once
}

// subOpts is one subscription of the connection.
type subOpts struct {
	qos     byte
	noLocal bool
	id      int // MQTT 5 subscription identifier, 0 for none
	// bound is set while the filter is bound to the session queue: a topic
	// (QoS 0) delivery it matches is then left to the queue's copy.
	bound bool
}

func newConn(s *Server, cl *mochi.Client) *conn {
	c := &conn{
		s:      s,
		cl:     cl,
		nc:     cl.Net.Conn,
		v5:     cl.Properties.ProtocolVersion == 5,
		origin: "mqtt:" + cl.ID,
		subs:   make(map[string]subOpts),
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

// start runs the pipeline and the writer.
func (c *conn) start() {
	c.s.wg.Add(2)
	go func() {
		defer c.s.wg.Done()
		c.pipe.run()
	}()
	go func() {
		defer c.s.wg.Done()
		c.out.run()
	}()
}

// teardown ends the connection's engine state and joins its goroutines.
// It runs in the read goroutine once mochi's read loop ended.
func (c *conn) teardown() {
	c.teardownOnce.Do(func() {
		c.cl.Stop(nil) // the writer's socket writes fail from now on
		c.pipe.close()
		c.mu.Lock()
		topic, cons, queue := c.topic, c.cons, c.queue
		c.topic, c.cons, c.queue = nil, nil, ""
		c.mu.Unlock()
		if topic != nil {
			topic.Close()
		}
		if cons != nil {
			_ = cons.Close()
		}
		if queue != "" {
			if err := c.s.b.DeleteQueue(queue); err != nil && !errors.Is(err, engine.ErrNoQueue) && !errors.Is(err, engine.ErrClosed) {
				c.log.Warn().Err(err).Str("queue", queue).Msg("deleting session queue")
			}
		}
		c.out.close()
		c.s.detach(c)
	})
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

// checkPublish refuses, before mochi handles it, a PUBLISH this slice
// cannot honour: QoS 2, RETAIN under MQTT 5, or over Receive Maximum.
func (c *conn) checkPublish(pk packets.Packet) (packets.Packet, error) {
	switch {
	case pk.FixedHeader.Qos > 1:
		// MQTT 5: CONNACK said Maximum QoS 1, so this is a protocol error
		// [MQTT-3.2.2-11]. MQTT 3.1.1 has no way to refuse it: close.
		c.log.Debug().Msg("QoS 2 publish refused: QoS 2 is not implemented yet")
		c.disconnect(packets.ErrQosNotSupported)
		return pk, packets.ErrRejectPacket
	case pk.FixedHeader.Retain && c.v5:
		c.disconnect(packets.ErrRetainNotSupported) // CONNACK said Retain Available 0
		return pk, packets.ErrRejectPacket
	case pk.FixedHeader.Qos == 1 && c.v5 && int(c.inQoS.Load()) >= c.s.cfg.ReceiveMaximum:
		c.disconnect(packets.ErrReceiveMaximum)
		return pk, packets.ErrRejectPacket
	case pk.FixedHeader.Qos == 1 && isSysTopic(pk.TopicName):
		// mochi drops a publish to $SYS without an ack, leaving a QoS 1
		// publisher waiting for ever: refuse it here, in order with the
		// other acks (v5 0x87; v3 acked and dropped).
		c.inQoS.Add(1)
		c.pipe.push(pubItem{qos: 1, pid: pk.PacketID, err: errSysTopic})
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
	m := c.message(&pk, time.Now())
	if pk.FixedHeader.Qos > 0 {
		c.inQoS.Add(1)
	}
	c.pipe.push(pubItem{m: m, qos: pk.FixedHeader.Qos, pid: pk.PacketID})
}

// subscribe handles a valid SUBSCRIBE: engine state for each filter, then
// the SUBACK.
func (c *conn) subscribe(pk packets.Packet) {
	c.pipe.barrier() // this client's earlier publishes are routed first
	codes := make([]byte, len(pk.Filters))
	for i, f := range pk.Filters {
		codes[i] = c.subscribeOne(f)
		if !c.v5 && codes[i] >= packets.ErrUnspecifiedError.Code {
			codes[i] = packets.ErrUnspecifiedError.Code // the only MQTT 3.1.1 failure code
		}
	}
	c.out.control(encode(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Suback},
		PacketID:        pk.PacketID,
		ReasonCodes:     codes,
		ProtocolVersion: c.cl.Properties.ProtocolVersion,
	}))
}

// subscribeOne subscribes to one filter and returns its SUBACK code.
func (c *conn) subscribeOne(f packets.Subscription) byte {
	switch {
	case len(f.ShareName) > 0 || strings.HasPrefix(f.Filter, "$share/"):
		return packets.ErrSharedSubscriptionsNotSupported.Code
	case strings.HasPrefix(f.Filter, "$queue/"):
		// Competing consumers over MQTT are not implemented yet.
		return packets.ErrImplementationSpecificError.Code
	case engine.ValidateFilter(f.Filter) != nil:
		return packets.ErrTopicFilterInvalid.Code
	}
	c.mu.Lock()
	old, had := c.subs[f.Filter]
	full := !had && len(c.subs) >= c.s.cfg.MaxSubscriptions
	c.mu.Unlock()
	if full {
		return packets.ErrQuotaExceeded.Code
	}
	qos := min(f.Qos, 1)
	opts := subOpts{qos: qos, noLocal: f.NoLocal, id: f.Identifier}
	var err error
	if qos == 0 {
		err = c.toTopic(f.Filter, opts, had && old.bound)
	} else {
		err = c.toQueue(f.Filter, opts, had && !old.bound)
	}
	if err != nil {
		c.log.Warn().Err(err).Str("filter", f.Filter).Msg("subscribe")
		if errors.Is(err, engine.ErrInvalidFilter) {
			return packets.ErrTopicFilterInvalid.Code
		}
		return packets.ErrUnspecifiedError.Code
	}
	return qos
}

// toTopic makes filter a QoS 0 subscription (in the topic subscription).
// Moving it from the queue may deliver a message twice, never lose one.
func (c *conn) toTopic(filter string, opts subOpts, wasBound bool) error {
	c.mu.Lock()
	c.subs[filter] = subOpts{qos: opts.qos, noLocal: opts.noLocal, id: opts.id, bound: wasBound}
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
// attaching the consumer on first use.
func (c *conn) sessionQueue() (string, error) {
	c.mu.Lock()
	q := c.queue
	c.mu.Unlock()
	if q != "" {
		return q, nil
	}
	// Unique per connection: a takeover's old connection deletes its own
	// queue, never the new one's. '$' names cannot be read over STOMP.
	q = "$mqtt-clean/" + strconv.FormatUint(c.s.nextConn.Add(1), 10) + "/" + c.cl.ID
	cfg := &c.s.cfg
	err := c.s.b.DeclareQueue(q, engine.QueueOptions{Temporary: true, Policy: engine.Policy{
		MaxDeliveries:   -1, // a clean session cannot refuse for good
		MaxLength:       cfg.SessionQueueMaxLength,
		MaxBytes:        cfg.SessionQueueMaxBytes,
		Overflow:        engine.OverflowDropHead,
		DeadLetterQueue: "-",
	}})
	if err != nil {
		return "", err
	}
	cons, err := c.s.b.Consume(q, sink{c}, engine.ConsumeOptions{Credit: c.credit})
	if err != nil {
		_ = c.s.b.DeleteQueue(q)
		return "", err
	}
	c.mu.Lock()
	c.queue, c.cons = q, cons
	c.mu.Unlock()
	return q, nil
}

// unsubscribe handles a valid UNSUBSCRIBE.
func (c *conn) unsubscribe(pk packets.Packet) {
	c.pipe.barrier()
	codes := make([]byte, len(pk.Filters))
	for i, f := range pk.Filters {
		c.mu.Lock()
		opts, ok := c.subs[f.Filter]
		delete(c.subs, f.Filter)
		topic, queue := c.topic, c.queue
		c.mu.Unlock()
		if !ok {
			codes[i] = packets.CodeNoSubscriptionExisted.Code
			continue
		}
		if opts.bound {
			if err := c.s.b.Unbind(f.Filter, queue); err != nil {
				c.log.Warn().Err(err).Str("filter", f.Filter).Msg("unsubscribe")
				codes[i] = packets.ErrUnspecifiedError.Code
			}
		} else if topic != nil {
			topic.RemoveFilter(f.Filter)
		}
	}
	c.out.control(encode(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Unsuback},
		PacketID:        pk.PacketID,
		ReasonCodes:     codes,
		ProtocolVersion: c.cl.Properties.ProtocolVersion,
	}))
}

// clientPuback completes a QoS 1 delivery. An MQTT 5 PUBACK with a reason
// code of 0x80 or more refuses it: the message comes back (NACK).
func (c *conn) clientPuback(pk packets.Packet) {
	tag, ok := c.out.release(pk.PacketID)
	if !ok {
		return // not ours, or already completed
	}
	c.mu.Lock()
	cons := c.cons
	c.mu.Unlock()
	if cons == nil {
		return
	}
	var err error
	if c.v5 && pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
		err = cons.Nack(tag)
	} else {
		err = cons.Ack(false, tag)
	}
	if err != nil && !errors.Is(err, engine.ErrClosed) {
		c.log.Debug().Err(err).Uint16("packet_id", pk.PacketID).Msg("puback")
	}
}

// match is what a connection's subscriptions say about one message.
type match struct {
	any, bound bool
	qos        byte
	allNoLocal bool
	ids        []int
}

// matchLocked evaluates the subscriptions against topic.
func (c *conn) matchLocked(topic string) match {
	mt := match{allNoLocal: true}
	for f, o := range c.subs {
		if !engine.MatchTopic(f, topic) {
			continue
		}
		mt.any = true
		mt.bound = mt.bound || o.bound
		mt.qos = max(mt.qos, o.qos)
		mt.allNoLocal = mt.allNoLocal && o.noLocal
		if o.id > 0 {
			mt.ids = append(mt.ids, o.id)
		}
	}
	return mt
}

// sink receives the connection's engine deliveries (topic subscription and
// session queue) and hands them to the writer. It runs under engine locks.
type sink struct{ c *conn }

func (s sink) Deliver(d engine.Delivery) { s.c.out.deliver(d) }
