package stomp

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/go-stomp/stomp/v3/frame"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/protocol"
)

// maxPipelined bounds the SENDs committed together.
const maxPipelined = 256

// pendingSend is a SEND waiting to be committed with its neighbours.
type pendingSend struct {
	f *frame.Frame
	m *engine.Message
}

// stateConnected handles every frame after CONNECTED. Non-transactional
// SENDs are handled by queueSend and flushSends before they get here.
func stateConnected(c *conn, f *frame.Frame) error {
	switch f.Command {
	case frame.SEND:
		return c.onSend(f)
	case frame.SUBSCRIBE:
		return c.onSubscribe(f)
	case frame.UNSUBSCRIBE:
		return c.onUnsubscribe(f)
	case frame.ACK:
		return c.onAck(f, true)
	case frame.NACK:
		if c.version() == V10 {
			return errorf(f, "NACK is not part of STOMP 1.0")
		}
		return c.onAck(f, false)
	case frame.BEGIN:
		return c.onBegin(f)
	case frame.COMMIT:
		return c.onCommit(f)
	case frame.ABORT:
		return c.onAbort(f)
	case frame.DISCONNECT:
		c.closing = true
		// The subscriptions end before the RECEIPT is queued: a client
		// holding its RECEIPT is gone, and a message published after it
		// must wait in its durable subscription, not be sent to this
		// connection and come back marked redelivered.
		c.teardown()
		c.out.control(c.receiptFor(f), true)
		return nil
	case frame.CONNECT, frame.STOMP:
		return errorf(f, "already connected")
	}
	return errorf(f, "unknown command %q", truncate(f.Command))
}

// receiptFor returns the RECEIPT for f, or nil when f asked for none.
func (c *conn) receiptFor(f *frame.Frame) *frame.Frame {
	id, ok := f.Header.Contains(frame.Receipt)
	if !ok {
		return nil
	}
	return frame.New(frame.RECEIPT, frame.ReceiptId, id)
}

func (c *conn) receipt(f *frame.Frame) {
	if r := c.receiptFor(f); r != nil {
		c.out.control(r, false)
	}
}

// frameHeaders are SEND headers that describe the frame, not the message.
var frameHeaders = map[string]bool{
	frame.Destination: true, frame.Receipt: true, frame.Transaction: true, frame.ContentLength: true,
	frame.MessageId: true, frame.Subscription: true, frame.Ack: true, "redelivered": true, "x-delivery-count": true,
}

// message builds the engine message of a SEND.
func (c *conn) message(f *frame.Frame) (*engine.Message, error) {
	dest, ok := f.Header.Contains(frame.Destination)
	if !ok {
		return nil, errorf(f, "SEND frame has no destination header")
	}
	d, err := protocol.ParseSTOMP(dest, false)
	if err != nil {
		return nil, errorf(f, "%v", err)
	}
	m := &engine.Message{Body: f.Body, QoS: 1}
	switch d.Kind {
	case protocol.Topic:
		m.Topic = d.Name
	case protocol.Queue:
		m.Topic, m.ToQueue = d.Name, true
	case protocol.TempQueue:
		q, err := c.tempQueue(d.Name, dest)
		if err != nil {
			return nil, err
		}
		m.Topic, m.ToQueue = q, true
	}
	if !c.mayPublish(m) {
		c.log.Info().Str("user", c.user).Str("destination", dest).Msg("send refused")
		return nil, errorf(f, "not authorized to send to %s", truncate(dest))
	}
	n := f.Header.Len()
	m.Props = make([]engine.Property, 0, n)
	for i := 0; i < n; i++ {
		k, v := f.Header.GetAt(i)
		if frameHeaders[k] {
			continue
		}
		switch k {
		case protocol.PropPersistent:
			if v == "false" {
				m.QoS = 0
			}
		case protocol.PropReplyTo:
			if strings.HasPrefix(v, protocol.STOMPTempQueuePrefix) {
				td, err := protocol.ParseSTOMP(v, false)
				if err != nil {
					return nil, errorf(f, "reply-to: %v", err)
				}
				q, err := c.tempQueue(td.Name, v)
				if err != nil {
					return nil, err
				}
				v = protocol.STOMPDestination(q, true)
			}
		}
		m.Props = append(m.Props, engine.Property{Key: k, Value: v})
	}
	protocol.ApplyTimeProps(m, time.Now())
	return m, nil
}

// queueSend adds a SEND to the batch committed by flushSends.
func (c *conn) queueSend(f *frame.Frame) error {
	m, err := c.message(f)
	if err != nil {
		return err
	}
	c.pending = append(c.pending, pendingSend{f, m})
	return nil
}

// flushSends commits the queued SENDs with one store write and sends their
// receipts, each after its message is on disk. A refused SEND fails the
// connection after the receipts of those before it.
func (c *conn) flushSends() error {
	if len(c.pending) == 0 {
		return nil
	}
	ms := make([]*engine.Message, len(c.pending))
	for i, p := range c.pending {
		ms[i] = p.m
	}
	errs := make([]error, len(ms))
	pending := c.pending
	c.pending = c.pending[:0]
	if err := c.s.b.PublishAll(ms, errs); err != nil {
		return err
	}
	for i, p := range pending {
		if errs[i] != nil {
			return sendError(p.f, errs[i])
		}
		c.receipt(p.f)
	}
	clear(pending)
	return nil
}

// sendError turns an engine refusal of a SEND into the client's error.
func sendError(f *frame.Frame, err error) error {
	switch {
	case errors.Is(err, engine.ErrQueueFull):
		return &protoError{msg: "message refused: queue full", detail: err.Error(), frame: f}
	case errors.Is(err, engine.ErrInvalidTopic), errors.Is(err, engine.ErrInvalidQueue):
		return &protoError{msg: "message refused: bad destination", detail: err.Error(), frame: f}
	case errors.Is(err, engine.ErrDiskFull):
		return &protoError{msg: "message refused: disk space low", detail: err.Error(), frame: f}
	case errors.Is(err, engine.ErrTooManyQueues):
		return &protoError{msg: "message refused: too many queues", detail: err.Error(), frame: f}
	case errors.Is(err, engine.ErrClosed):
		return &protoError{msg: "server shutting down", frame: f}
	}
	return err
}

// onSend handles a SEND inside a transaction.
func (c *conn) onSend(f *frame.Frame) error {
	id := f.Header.Get(frame.Transaction)
	tx := c.txns[id]
	if tx == nil {
		return errorf(f, "unknown transaction %q", truncate(id))
	}
	m, err := c.message(f)
	if err != nil {
		return err
	}
	if err := tx.add(c, func(etx *engine.Txn) error { return etx.Publish(m) }); err != nil {
		return errorf(f, "%v", err)
	}
	c.receipt(f)
	return nil
}

// tempQueue returns the engine queue behind the connection's temporary
// queue name, declaring it and subscribing the connection to it on first
// use, as RabbitMQ does: replies arrive as MESSAGEs whose subscription is
// the temp-queue destination. SUBSCRIBE passes dest "": the client reads
// the queue through its own subscription, and an automatic one would
// compete with it for the replies.
func (c *conn) tempQueue(name, dest string) (string, error) {
	if q, ok := c.temps[name]; ok {
		return q, nil
	}
	q := protocol.TempQueueName(c.id, name)
	if err := c.s.b.DeclareQueue(q, engine.QueueOptions{Temporary: true}); err != nil {
		return "", err
	}
	c.temps[name] = q
	if _, exists := c.subs[dest]; !exists && dest != "" {
		sub, err := c.newSubscription(dest, dest, ackAuto, c.s.cfg.DefaultPrefetch)
		if err != nil {
			return "", err
		}
		if err := sub.consume(q); err != nil {
			return "", err
		}
	}
	return q, nil
}

// onSubscribe handles SUBSCRIBE.
func (c *conn) onSubscribe(f *frame.Frame) error {
	dest, ok := f.Header.Contains(frame.Destination)
	if !ok {
		return errorf(f, "SUBSCRIBE frame has no destination header")
	}
	id, ok := f.Header.Contains(frame.Id)
	if !ok {
		if c.version() >= V11 {
			return errorf(f, "SUBSCRIBE frame has no id header")
		}
		id = dest
	}
	if _, dup := c.subs[id]; dup {
		return errorf(f, "subscription id %q already in use", truncate(id))
	}
	if len(c.subs) >= c.s.cfg.MaxSubscriptions {
		c.s.SubscriptionsRefused.Add(1)
		return errorf(f, "too many subscriptions (limit %d)", c.s.cfg.MaxSubscriptions)
	}
	mode, err := parseAckMode(f.Header.Get(frame.Ack))
	if err != nil {
		return errorf(f, "%v", err)
	}
	credit := c.s.cfg.DefaultPrefetch
	for _, h := range []string{"prefetch-count", "activemq.prefetchSize"} {
		if v, ok := f.Header.Contains(h); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return errorf(f, "bad %s header %q", h, truncate(v))
			}
			if n > 0 {
				credit = min(n, c.s.cfg.MaxPrefetch)
			}
			break
		}
	}
	d, err := protocol.ParseSTOMP(dest, true)
	if err != nil {
		return errorf(f, "%v", err)
	}
	if !c.maySubscribe(d) {
		c.log.Info().Str("user", c.user).Str("destination", dest).Msg("subscribe refused")
		return errorf(f, "not authorized to subscribe to %s", truncate(dest))
	}
	sub, err := c.newSubscription(id, dest, mode, credit)
	if err != nil {
		return errorf(f, "%v", err)
	}
	switch d.Kind {
	case protocol.Queue:
		err = sub.consume(d.Name)
	case protocol.TempQueue:
		var q string
		if q, err = c.tempQueue(d.Name, ""); err == nil {
			err = sub.consume(q)
		}
	case protocol.Topic:
		if name := c.durableName(f); name != "" {
			var q string
			if q, err = protocol.SharedSubscriptionQueue(name, d.Name); err == nil {
				if err = c.s.b.DurableSubscription(q, d.Name, engine.QueueOptions{}); err == nil {
					// Recorded (synced, before the RECEIPT) so that MQTT
					// does not delete the queue when its last $share/
					// member of the same name leaves.
					err = c.s.b.ApplyKV([]engine.KVOp{{NS: protocol.DurableSubscriptionNS, Key: q, Value: []byte{}}}, true)
				}
				if err == nil {
					sub.durableQueue = q
					err = sub.consume(q)
				}
			}
		} else {
			err = sub.subscribeTopic(d.Name)
		}
	}
	if err != nil {
		sub.close()
		return errorf(f, "subscribe to %s: %v", truncate(dest), err)
	}
	c.receipt(f)
	return nil
}

// durableName returns the name of the durable subscription a SUBSCRIBE
// asks for in any of the common dialects, or "" for a plain one:
// RabbitMQ (durable:true or persistent:true, named by id), ActiveMQ
// (activemq.subscriptionName with the connection's client-id) and Artemis
// (durable-subscription-name or durable-subscriber-name, with client-id).
func (c *conn) durableName(f *frame.Frame) string {
	for _, h := range []string{"activemq.subscriptionName", "durable-subscription-name", "durable-subscriber-name"} {
		if v := f.Header.Get(h); v != "" {
			if c.clientID != "" {
				return c.clientID + "." + v
			}
			return v
		}
	}
	if f.Header.Get("durable") == "true" || f.Header.Get("persistent") == "true" {
		if f.Header.Get("auto-delete") == "true" {
			return ""
		}
		if q := f.Header.Get("x-queue-name"); q != "" {
			return q
		}
		return f.Header.Get(frame.Id)
	}
	return ""
}

// onUnsubscribe handles UNSUBSCRIBE. A durable subscription is only left,
// and keeps its messages, unless the frame says to end it (durable:true,
// or the ActiveMQ/Artemis subscription name header).
func (c *conn) onUnsubscribe(f *frame.Frame) error {
	id, ok := f.Header.Contains(frame.Id)
	if !ok {
		if c.version() >= V11 {
			return errorf(f, "UNSUBSCRIBE frame has no id header")
		}
		id = f.Header.Get(frame.Destination)
	}
	sub := c.subs[id]
	if sub == nil {
		return errorf(f, "no subscription %q", truncate(id))
	}
	sub.close()
	if sub.durableQueue != "" && (f.Header.Get("durable") == "true" || f.Header.Get("persistent") == "true" ||
		f.Header.Get("activemq.subscriptionName") != "" || f.Header.Get("durable-subscription-name") != "" ||
		f.Header.Get("durable-subscriber-name") != "") {
		if err := c.s.b.DeleteQueue(sub.durableQueue); err != nil && !errors.Is(err, engine.ErrNoQueue) {
			return err
		}
		if err := c.s.b.ApplyKV([]engine.KVOp{{NS: protocol.DurableSubscriptionNS, Key: sub.durableQueue, Delete: true}}, false); err != nil {
			return err
		}
	}
	c.receipt(f)
	return nil
}

// onAck handles ACK (ack) and NACK (!ack), outside or inside a transaction.
func (c *conn) onAck(f *frame.Frame, ack bool) error {
	var id string
	if c.version() == V12 {
		id = f.Header.Get(frame.Id)
	} else {
		id = f.Header.Get(frame.MessageId)
	}
	if id == "" {
		return errorf(f, "%s frame has no %s header", f.Command, map[bool]string{true: "id", false: "message-id"}[c.version() == V12])
	}
	sub, tag, err := c.parseAckID(id)
	if err != nil {
		return errorf(f, "%v", err)
	}
	if txID := f.Header.Get(frame.Transaction); txID != "" {
		tx := c.txns[txID]
		if tx == nil {
			return errorf(f, "unknown transaction %q", truncate(txID))
		}
		if err := tx.add(c, func(etx *engine.Txn) error { return sub.settleInTxn(etx, tag, ack, tx) }); err != nil {
			return errorf(f, "%v", err)
		}
		c.receipt(f)
		return nil
	}
	_, wantReceipt := f.Header.Contains(frame.Receipt)
	if err := sub.settle(tag, ack, wantReceipt); err != nil {
		return err
	}
	c.receipt(f)
	return nil
}
