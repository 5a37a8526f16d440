package mqtt

import (
	"bytes"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/engine"
)

// writeTimeout bounds one write to the socket: a peer that stops reading
// is disconnected rather than holding its messages forever.
const writeTimeout = 30 * time.Second

// outItem is an encoded packet (PUBACK, SUBACK, UNSUBACK) or a delivery to
// encode.
type outItem struct {
	pkt []byte
	d   engine.Delivery
}

// outbox is a connection's outbound queue and its writer: a mutex-guarded
// slice and a wake-up channel of capacity one, drained by one goroutine
// that writes everything queued with one socket write. Queue (QoS 1)
// deliveries are bounded by the consumer's credit, QoS 0 topic deliveries
// by Config.TopicBuffer (past it they are dropped and counted), and acks by
// Config.ReceiveMaximum (past it their producer waits).
//
// The writer writes under the mochi client's lock, as mochi's WritePacket
// does, so the CONNACK, PINGRESP and DISCONNECT mochi writes never
// interleave with its packets.
type outbox struct {
	c      *conn
	mu     sync.Mutex
	room   *sync.Cond // signalled when acks leave, or on close
	items  []outItem
	topics int // topic deliveries in items
	ctrls  int // encoded packets in items
	closed bool
	drops  uint64
	notify chan struct{}
	done   chan struct{}

	// idMu guards the packet ids of QoS 1 deliveries awaiting PUBACK.
	idMu     sync.Mutex
	inflight map[uint16]uint64 // packet id -> engine delivery tag
	lastID   uint16
}

func newOutbox(c *conn) *outbox {
	o := &outbox{
		c:        c,
		notify:   make(chan struct{}, 1),
		done:     make(chan struct{}),
		inflight: make(map[uint16]uint64),
	}
	o.room = sync.NewCond(&o.mu)
	return o
}

func (o *outbox) wake() {
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

// deliver queues an engine delivery. It runs under engine locks and never
// blocks.
func (o *outbox) deliver(d engine.Delivery) {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	if d.Tag == 0 {
		if o.topics >= o.c.s.cfg.TopicBuffer {
			o.drops++
			first := o.drops == 1
			o.mu.Unlock()
			o.c.s.Dropped.Add(1)
			if first {
				o.c.log.Warn().Int("buffer", o.c.s.cfg.TopicBuffer).Msg("slow consumer: dropping QoS 0 messages")
			}
			return
		}
		o.topics++
	}
	o.items = append(o.items, outItem{d: d})
	o.mu.Unlock()
	o.wake()
}

// control queues an encoded packet, waiting while Config.ReceiveMaximum of
// them are queued. False if the connection is closing.
func (o *outbox) control(pkt []byte) bool {
	if pkt == nil {
		return false
	}
	o.mu.Lock()
	for o.ctrls >= o.c.s.cfg.ReceiveMaximum && !o.closed {
		o.room.Wait()
	}
	if o.closed {
		o.mu.Unlock()
		return false
	}
	o.items = append(o.items, outItem{pkt: pkt})
	o.ctrls++
	o.mu.Unlock()
	o.wake()
	return true
}

// close stops the writer after what is queued and waits for it.
func (o *outbox) close() {
	o.shut()
	<-o.done
}

// shut marks the outbox closed: nothing more is queued.
func (o *outbox) shut() {
	o.mu.Lock()
	o.closed = true
	o.room.Broadcast()
	o.mu.Unlock()
	o.wake()
}

// take swaps out the queued items. With none queued it swaps nothing, so
// that spare and o.items never share an array.
func (o *outbox) take(spare []outItem) (items []outItem, closed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.items) == 0 {
		return spare[:0], o.closed
	}
	items, o.items = o.items, spare[:0]
	o.topics, o.ctrls = 0, 0
	o.room.Broadcast()
	return items, o.closed
}

// allocID records a QoS 1 delivery and returns its packet id. Credit keeps
// the deliveries awaiting PUBACK at most MaxInflight (< 65535), so a free
// id always exists.
func (o *outbox) allocID(tag uint64) (uint16, bool) {
	o.idMu.Lock()
	defer o.idMu.Unlock()
	for range 1 << 16 {
		o.lastID++
		if o.lastID == 0 {
			continue
		}
		if _, used := o.inflight[o.lastID]; !used {
			o.inflight[o.lastID] = tag
			return o.lastID, true
		}
	}
	return 0, false
}

// release completes a packet id and returns its delivery tag.
func (o *outbox) release(id uint16) (uint64, bool) {
	o.idMu.Lock()
	defer o.idMu.Unlock()
	tag, ok := o.inflight[id]
	delete(o.inflight, id)
	return tag, ok
}

// run is the writer goroutine.
func (o *outbox) run() {
	defer close(o.done)
	defer o.shut()
	c := o.c
	var (
		items []outItem
		buf   []byte
		pb    bytes.Buffer
		acks  []uint64 // queue deliveries done once written
	)
	for {
		var closed bool
		items, closed = o.take(items)
		if len(items) == 0 {
			if closed {
				return
			}
			<-o.notify
			continue
		}
		now := time.Now()
		buf, acks = buf[:0], acks[:0]
		for i := range items {
			it := &items[i]
			if it.pkt != nil {
				buf = append(buf, it.pkt...)
				continue
			}
			var ok bool
			buf, acks, ok = o.appendDelivery(buf, &pb, acks, it.d, now)
			if !ok {
				c.log.Error().Msg("no free packet id")
				c.cl.Stop(packets.ErrQuotaExceeded)
				return
			}
		}
		clear(items)
		if len(buf) > 0 && !o.write(buf) {
			return
		}
		o.ackWritten(acks)
		if cap(buf) > 1<<20 {
			buf = nil
		}
	}
}

// appendDelivery encodes a delivery as a PUBLISH, or decides to skip it.
// Queue deliveries that need no PUBACK are added to acks. false means no
// packet id was free.
func (o *outbox) appendDelivery(buf []byte, pb *bytes.Buffer, acks []uint64, d engine.Delivery, now time.Time) ([]byte, []uint64, bool) {
	c := o.c
	m := d.Msg
	fromQueue := d.Tag != 0
	c.mu.Lock()
	mt := c.matchLocked(m.Topic)
	c.mu.Unlock()
	skip := !mt.any || // unsubscribed since
		(!fromQueue && mt.bound) || // the session queue carries this message
		(mt.allNoLocal && m.Origin == c.origin) || // No Local [MQTT-3.8.3-3]
		m.Expired(now)
	if skip {
		if fromQueue {
			acks = append(acks, d.Tag)
		}
		return buf, acks, true
	}
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: min(m.QoS, mt.qos)},
		TopicName:       m.Topic,
		Payload:         m.Body,
		ProtocolVersion: c.cl.Properties.ProtocolVersion,
		// MaxSize 0 and problem info allowed: otherwise mochi drops the
		// user properties (properties.go); the size is checked below.
		Mods: packets.Mods{AllowResponseInfo: true},
	}
	if c.v5 {
		pk.Properties = outProps(m, now)
		pk.Properties.SubscriptionIdentifier = mt.ids
	}
	if pk.FixedHeader.Qos > 0 {
		id, ok := o.allocID(d.Tag)
		if !ok {
			return buf, acks, false
		}
		pk.PacketID = id
	} else if fromQueue {
		acks = append(acks, d.Tag) // QoS 0: at most once, done once written
	}
	pb.Reset()
	if err := pk.PublishEncode(pb); err != nil {
		c.log.Error().Err(err).Msg("encoding PUBLISH")
		return buf, o.discard(acks, pk.PacketID, d.Tag), true
	}
	if max := c.cl.Properties.Props.MaximumPacketSize; max > 0 && uint32(pb.Len()) > max {
		// Discarded as if sent [MQTT-3.1.2-25].
		c.log.Debug().Int("size", pb.Len()).Uint32("max", max).Msg("delivery over the client's maximum packet size discarded")
		return buf, o.discard(acks, pk.PacketID, d.Tag), true
	}
	return append(buf, pb.Bytes()...), acks, true
}

// discard drops an encoded delivery: its id is freed and its queue entry
// acked.
func (o *outbox) discard(acks []uint64, id uint16, tag uint64) []uint64 {
	if id != 0 {
		o.release(id)
		return append(acks, tag)
	}
	return acks // a QoS 0 queue delivery is in acks already
}

func (o *outbox) ackWritten(acks []uint64) {
	if len(acks) == 0 {
		return
	}
	c := o.c
	c.mu.Lock()
	cons := c.cons
	c.mu.Unlock()
	if cons != nil {
		_ = cons.Ack(false, acks...) // a clean session's queue is in memory
	}
}

// write writes buf under the mochi client's lock. On failure it stops the
// client (its read loop ends and the connection is torn down).
func (o *outbox) write(buf []byte) bool {
	c := o.c
	c.cl.Lock()
	err := c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err == nil {
		_, err = c.nc.Write(buf)
	}
	c.cl.Unlock()
	if err != nil {
		c.log.Debug().Err(err).Msg("write")
		c.cl.Stop(err)
		return false
	}
	return true
}
