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
	// resent is a QoS 2 PUBLISH re-sent before its PUBREL: PUBREC again.
	resent bool
	// rel is a PUBREL for pid: the QoS 2 record goes, then PUBCOMP.
	rel bool
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

// commit publishes a batch and answers each of its publishes and PUBRELs.
// A persistent session's QoS 2 records are written in the same store batch,
// synced, so that PUBREC and PUBCOMP follow a durable state (qos2.go).
func (p *pipeline) commit(batch []pubItem) {
	c := p.c
	durable := c.sess != nil
	tx := c.s.b.BeginBatch()
	n, kv := 0, 0
	for _, it := range batch {
		switch {
		case it.m != nil:
			_ = tx.Publish(it.m) // a refusal is reported by PublishErr
			n++
			if it.qos == 2 && durable {
				tx.PutKV(qos2InNS, qos2Key(c.cl.ID, it.pid), []byte{})
				tx.Sync = true
				kv++
			}
		case it.rel && durable && c.hasReceived(it.pid):
			tx.DeleteKV(qos2InNS, qos2Key(c.cl.ID, it.pid))
			tx.Sync = true
			kv++
		}
	}
	var commitErr error
	if n+kv > 0 {
		commitErr = tx.Commit()
		if commitErr != nil && !errors.Is(commitErr, engine.ErrClosed) {
			c.log.Error().Err(commitErr).Int("publishes", n).Msg("commit")
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
	if err := p.dropRefusedQoS2(batch, errs, commitErr); err != nil {
		c.log.Error().Err(err).Msg("deleting QoS 2 records")
		c.cl.Stop(err)
		return
	}
	failed := false
	for k, it := range batch {
		switch {
		case it.barrier != nil:
			close(it.barrier)
			continue
		case it.qos == 0:
			if errs[k] != nil {
				c.log.Debug().Err(errs[k]).Msg("QoS 0 publish refused")
			}
			continue
		case failed:
			continue // the connection is closing; these get no answer
		case it.rel:
			failed = !p.complete(it.pid, commitErr)
		case it.resent:
			c.out.control(encode(packets.Packet{
				FixedHeader:     packets.FixedHeader{Type: packets.Pubrec},
				PacketID:        it.pid,
				ProtocolVersion: c.cl.Properties.ProtocolVersion,
			}))
		default:
			failed = !p.ack(it, errs[k])
		}
	}
}

// dropRefusedQoS2 forgets the QoS 2 ids of refused publishes: the PUBREC
// with an error ends their flow, and the id may carry a new message at
// once. A persistent session's record, written with an accepted batch,
// is deleted (synced) first.
func (p *pipeline) dropRefusedQoS2(batch []pubItem, errs []error, commitErr error) error {
	c := p.c
	var ops []engine.KVOp
	for k, it := range batch {
		if it.qos != 2 || it.m == nil || errs[k] == nil {
			continue
		}
		if c.sess != nil && commitErr == nil {
			ops = append(ops, engine.KVOp{NS: qos2InNS, Key: qos2Key(c.cl.ID, it.pid), Delete: true})
		}
	}
	if len(ops) == 0 {
		return nil
	}
	return c.s.b.ApplyKV(ops, true)
}

// complete answers a PUBREL with PUBCOMP once its record is gone; false if
// the connection must close instead (the deletion was not written).
func (p *pipeline) complete(pid uint16, commitErr error) bool {
	c := p.c
	if commitErr != nil && c.sess != nil && c.hasReceived(pid) {
		c.cl.Stop(commitErr)
		return false
	}
	known, counted := c.forgetReceived(pid)
	if counted {
		c.inQoS.Add(-1)
	}
	code := byte(0)
	if !known && c.v5 {
		code = packets.ErrPacketIdentifierNotFound.Code // [MQTT-4.3.3-13]
	}
	c.out.control(encode(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Pubcomp},
		PacketID:        pid,
		ReasonCode:      code,
		ProtocolVersion: c.cl.Properties.ProtocolVersion,
	}))
	return true
}

// ack queues the PUBACK of a QoS 1 publish or the PUBREC of a QoS 2 one;
// false if the connection must close instead. An accepted QoS 2 publish
// stays counted toward Receive Maximum until its PUBCOMP.
func (p *pipeline) ack(it pubItem, err error) bool {
	c := p.c
	typ := packets.Puback
	if it.qos == 2 {
		typ = packets.Pubrec
		if err != nil {
			c.forgetReceived(it.pid)
		}
	}
	if it.qos == 1 || err != nil {
		defer c.inQoS.Add(-1)
	}
	code := byte(0)
	if err != nil {
		c.log.Debug().Err(err).Uint16("packet_id", it.pid).Msg("publish refused")
		if !c.v5 {
			// MQTT 3.1.1 has no negative PUBACK or PUBREC. A transient
			// refusal closes the connection without an ack, so the client
			// keeps the message and sends it again; a bad topic is acked
			// and dropped (it would be refused again).
			if !errors.Is(err, engine.ErrInvalidTopic) && !errors.Is(err, engine.ErrInvalidQueue) && !errors.Is(err, errSysTopic) {
				c.cl.Stop(err)
				return false
			}
		} else {
			code = reasonCode(err)
		}
	}
	c.out.control(encode(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: typ},
		PacketID:        it.pid,
		ReasonCode:      code,
		ProtocolVersion: c.cl.Properties.ProtocolVersion,
	}))
	return true
}

// reasonCode translates an engine refusal into an MQTT 5 PUBACK or PUBREC
// reason.
func reasonCode(err error) byte {
	switch {
	case errors.Is(err, engine.ErrQueueFull), errors.Is(err, engine.ErrTooManyQueues), errors.Is(err, engine.ErrDiskFull):
		return packets.ErrQuotaExceeded.Code
	case errors.Is(err, engine.ErrInvalidTopic), errors.Is(err, engine.ErrInvalidQueue):
		return packets.ErrTopicNameInvalid.Code
	case errors.Is(err, errSysTopic), errors.Is(err, errNotAuthorized):
		return packets.ErrNotAuthorized.Code
	}
	return packets.ErrUnspecifiedError.Code
}
