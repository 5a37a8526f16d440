package stomp

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tandem-mq/tandem/engine"
)

// ackMode is a subscription's STOMP ack mode.
type ackMode int

const (
	ackAuto ackMode = iota
	ackClient
	ackClientIndividual
)

func parseAckMode(s string) (ackMode, error) {
	switch s {
	case "", "auto":
		return ackAuto, nil
	case "client":
		return ackClient, nil
	case "client-individual":
		return ackClientIndividual, nil
	}
	return 0, fmt.Errorf("bad ack mode %q (auto, client or client-individual)", truncate(s))
}

// subscription is one SUBSCRIBE of a connection: a queue consumer (queues,
// durable and temporary queues) or an in-memory topic subscription. It is
// the engine's Sink for its deliveries.
type subscription struct {
	c            *conn
	id, dest     string
	num          uint64 // in ack ids
	mode         ackMode
	credit       int
	consumer     *engine.Consumer
	topic        *engine.TopicSub
	durableQueue string
	closed       atomic.Bool

	mu sync.Mutex
	// consumer is written by the processor once Consume returns, but the
	// engine may deliver (and the writer auto-ack) before that, so the
	// writer reads it under mu and parks its acks in early until it is
	// set (see autoAck).
	early []uint64
	// outstanding holds, in ack mode client, the tags delivered and not
	// yet settled, in delivery order: an ACK settles every tag up to its
	// own.
	outstanding []uint64
}

func (c *conn) newSubscription(id, dest string, mode ackMode, credit int) (*subscription, error) {
	c.nextSub++
	s := &subscription{c: c, id: id, dest: dest, num: c.nextSub, mode: mode, credit: credit}
	c.subs[id] = s
	c.subNums[s.num] = s
	c.info.addSub(id, dest)
	return s, nil
}

// consume attaches the subscription to a queue.
func (s *subscription) consume(queue string) error {
	cons, err := s.c.s.b.Consume(queue, s, engine.ConsumeOptions{Credit: s.credit})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.consumer = cons
	early := s.early
	s.early = nil
	s.mu.Unlock()
	if len(early) > 0 {
		if err := cons.Ack(false, early...); err != nil && !errors.Is(err, engine.ErrUnknownTag) {
			return err
		}
	}
	return nil
}

// autoAck acks what the writer sent to an ack:auto subscription. It runs
// in the writer goroutine.
func (s *subscription) autoAck(tags []uint64) error {
	s.mu.Lock()
	cons := s.consumer
	if cons == nil {
		s.early = append(s.early, tags...)
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	return cons.Ack(false, tags...)
}

// subscribeTopic attaches the subscription to a topic filter.
func (s *subscription) subscribeTopic(filter string) error {
	ts, err := s.c.s.b.Subscribe(filter, s)
	if err != nil {
		return err
	}
	s.topic = ts
	return nil
}

// Deliver implements engine.Sink. It runs in the publisher's goroutine
// with the queue's lock held: it only queues the delivery for the writer.
func (s *subscription) Deliver(d engine.Delivery) {
	if s.closed.Load() {
		return
	}
	if s.mode == ackClient && d.Tag != 0 {
		s.mu.Lock()
		s.outstanding = append(s.outstanding, d.Tag)
		s.mu.Unlock()
	}
	s.c.out.deliver(s, d)
}

// close detaches the subscription; a consumer's unacked messages return to
// its queue.
func (s *subscription) close() {
	if s.closed.Swap(true) {
		return
	}
	delete(s.c.subs, s.id)
	delete(s.c.subNums, s.num)
	s.c.info.removeSub(s.id)
	if s.topic != nil {
		s.topic.Close()
	}
	if s.consumer != nil {
		if err := s.consumer.Close(); err != nil && !errors.Is(err, engine.ErrClosed) {
			s.c.log.Warn().Err(err).Str("sub", s.id).Msg("closing consumer")
		}
	}
}

// ackID is the message-id and ack header of a queue delivery.
func ackID(num, tag uint64) string {
	return strconv.FormatUint(num, 10) + "-" + strconv.FormatUint(tag, 10)
}

// topicMsgID is the message-id of a topic delivery, which needs no ack.
func topicMsgID(num, n uint64) string {
	return strconv.FormatUint(num, 10) + "-t" + strconv.FormatUint(n, 10)
}

// parseAckID finds the subscription and tag an ACK or NACK names. Tag 0
// means a topic delivery: there is nothing to settle.
func (c *conn) parseAckID(id string) (*subscription, uint64, error) {
	a, b, ok := strings.Cut(id, "-")
	num, err := strconv.ParseUint(a, 10, 64)
	if !ok || err != nil {
		return nil, 0, fmt.Errorf("bad ack id %q", truncate(id))
	}
	sub := c.subNums[num]
	if sub == nil {
		return nil, 0, fmt.Errorf("ack id %q names no open subscription", truncate(id))
	}
	if strings.HasPrefix(b, "t") {
		return sub, 0, nil
	}
	tag, err := strconv.ParseUint(b, 10, 64)
	if err != nil || tag == 0 {
		return nil, 0, fmt.Errorf("bad ack id %q", truncate(id))
	}
	return sub, tag, nil
}

// take returns the tags an ACK or NACK of tag settles: in ack mode client
// every outstanding tag up to it, else tag alone.
func (s *subscription) take(tag uint64) []uint64 {
	if s.mode != ackClient {
		return []uint64{tag}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, t := range s.outstanding {
		if t == tag {
			tags := append([]uint64(nil), s.outstanding[:i+1]...)
			s.outstanding = s.outstanding[i+1:]
			return tags
		}
	}
	return nil // settled already
}

// settle acks or nacks a delivery outside a transaction. A tag the engine
// no longer knows (settled already, or the subscription's queue was
// deleted) is ignored, as a repeated ACK is harmless.
func (s *subscription) settle(tag uint64, ack, sync bool) error {
	if tag == 0 || s.consumer == nil || s.mode == ackAuto {
		return nil
	}
	tags := s.take(tag)
	if len(tags) == 0 {
		return nil
	}
	var err error
	if ack {
		err = s.consumer.Ack(sync, tags...)
	} else {
		for _, t := range tags {
			if e := s.consumer.Nack(t); e != nil && err == nil {
				err = e
			}
		}
	}
	if errors.Is(err, engine.ErrUnknownTag) {
		return nil
	}
	return err
}

// settleInTxn adds an ACK to a committing engine transaction, or queues a
// NACK to run once the transaction has committed.
func (s *subscription) settleInTxn(etx *engine.Txn, tag uint64, ack bool, tx *txn) error {
	if tag == 0 || s.consumer == nil || s.mode == ackAuto {
		return nil
	}
	if !ack {
		tx.after = append(tx.after, func() error { return s.settle(tag, false, false) })
		return nil
	}
	for _, t := range s.take(tag) {
		if err := etx.Ack(s.consumer, t); err != nil {
			return err
		}
	}
	return nil
}
