package mqtt

import (
	"errors"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/engine"
)

// maxBatch bounds the publishes one engine commit takes.
const maxBatch = 256

// pubItem is a publish waiting for its commit, or a barrier.
type pubItem struct {
	m   *engine.Message
	qos byte
	pid uint16
	// barrier, when set, is closed once every publish before it has been
	// committed (and its PUBACK queued).
	barrier chan struct{}
	// err, with m nil, is a publish refused before the engine saw it: it
	// is answered in order with the others.
	err error
}

// pipeline commits a connection's publishes in arrival order. The read
// goroutine pushes; the pipeline goroutine takes whatever has queued up,
// commits it as one engine batch (one store write, one fsync when a
// durable queue was reached; the store's group commit merges batches of
// other connections) and then queues each QoS 1 publish's PUBACK, in
// order [MQTT-4.6.0-2]. While one batch is in its fsync the next fills, so
// a client that pipelines publishes is not held to one fsync each.
//
// The channel holds at most Config.ReceiveMaximum items: when it is full
// push blocks, which stops the connection's reads (TCP pushes back).
type pipeline struct {
	c    *conn
	in   chan pubItem
	done chan struct{}
}

func newPipeline(c *conn) *pipeline {
	return &pipeline{c: c, in: make(chan pubItem, c.s.cfg.ReceiveMaximum), done: make(chan struct{})}
}

// push queues a publish. Only the read goroutine calls it.
func (p *pipeline) push(it pubItem) { p.in <- it }

// barrier returns once every publish pushed before it is committed.
func (p *pipeline) barrier() {
	ch := make(chan struct{})
	p.in <- pubItem{barrier: ch}
	<-ch
}

// close stops the pipeline once what was pushed is committed, and waits
// for it. Only the read goroutine calls it, after its last push.
func (p *pipeline) close() {
	close(p.in)
	<-p.done
}

func (p *pipeline) run() {
	defer close(p.done)
	batch := make([]pubItem, 0, 16)
	for {
		it, ok := <-p.in
		if !ok {
			return
		}
		batch = append(batch[:0], it)
	fill:
		for len(batch) < maxBatch {
			select {
			case it, ok := <-p.in:
				if !ok {
					break fill // the next receive sees the close too
				}
				batch = append(batch, it)
			default:
				break fill
			}
		}
		p.commit(batch)
		clear(batch)
	}
}

// commit publishes a batch and answers each of its publishes.
func (p *pipeline) commit(batch []pubItem) {
	c := p.c
	tx := c.s.b.BeginBatch()
	n := 0
	for _, it := range batch {
		if it.m != nil {
			_ = tx.Publish(it.m) // a refusal is reported by PublishErr
			n++
		}
	}
	if n > 0 {
		if err := tx.Commit(); err != nil && !errors.Is(err, engine.ErrClosed) {
			c.log.Error().Err(err).Int("publishes", n).Msg("commit")
		}
	} else {
		tx.Abort()
	}
	errs := make([]error, len(batch))
	i := 0
	for k, it := range batch {
		errs[k] = it.err
		if it.m != nil {
			errs[k] = tx.PublishErr(i)
			i++
		}
	}
	if err := c.s.storeRetained(batch, errs); err != nil {
		// The publishes went out but their retained state is not stored:
		// they are not acked (v5: 0x80; v3: the connection closes), so
		// the client sends them again.
		c.log.Error().Err(err).Msg("storing retained messages")
		for k, it := range batch {
			if it.m != nil && it.m.Retain && !it.m.ToQueue && errs[k] == nil {
				errs[k] = err
			}
		}
	}
	failed := false
	for k, it := range batch {
		if it.barrier != nil {
			close(it.barrier)
			continue
		}
		err := errs[k]
		if it.qos == 0 {
			if err != nil {
				c.log.Debug().Err(err).Msg("QoS 0 publish refused")
			}
			continue
		}
		if failed {
			continue // the connection is closing; these get no ack
		}
		if !p.ack(it, err) {
			failed = true
		}
	}
}

// ack queues the PUBACK of a QoS 1 publish; false if the connection must
// close instead.
func (p *pipeline) ack(it pubItem, err error) bool {
	c := p.c
	defer c.inQoS.Add(-1)
	code := byte(0)
	if err != nil {
		c.log.Debug().Err(err).Uint16("packet_id", it.pid).Msg("publish refused")
		if !c.v5 {
			// MQTT 3.1.1 has no negative PUBACK. A transient refusal
			// closes the connection without an ack, so the client keeps
			// the message and sends it again; a bad topic is acked and
			// dropped (it would be refused again).
			if !errors.Is(err, engine.ErrInvalidTopic) && !errors.Is(err, engine.ErrInvalidQueue) && !errors.Is(err, errSysTopic) {
				c.cl.Stop(err)
				return false
			}
		} else {
			code = reasonCode(err)
		}
	}
	c.out.control(encode(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Puback},
		PacketID:        it.pid,
		ReasonCode:      code,
		ProtocolVersion: c.cl.Properties.ProtocolVersion,
	}))
	return true
}

// reasonCode translates an engine refusal into an MQTT 5 PUBACK reason.
func reasonCode(err error) byte {
	switch {
	case errors.Is(err, engine.ErrQueueFull):
		return packets.ErrQuotaExceeded.Code
	case errors.Is(err, engine.ErrInvalidTopic), errors.Is(err, engine.ErrInvalidQueue):
		return packets.ErrTopicNameInvalid.Code
	case errors.Is(err, errSysTopic):
		return packets.ErrNotAuthorized.Code
	}
	return packets.ErrUnspecifiedError.Code
}
