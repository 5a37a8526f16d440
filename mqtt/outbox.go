package mqtt

import (
	"bytes"
	"errors"
	"slices"
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
	// retained marks a retained message sent because of a SUBSCRIBE: it
	// goes out with RETAIN 1, whatever the session queue carries.
	retained bool
	// flushed, when set, is closed once everything queued before it has
	// been written (flush).
	flushed chan struct{}
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
	c       *conn
	mu      sync.Mutex
	room    *sync.Cond // signalled when acks leave, or on close
	items   []outItem
	topics  int // topic deliveries in items
	ctrls   int // encoded packets in items
	closed  bool
	paused  bool // subscribe in progress: nothing is written until its SUBACK
	pauseAt int  // len(items) when paused: where the SUBACK goes
	drops   uint64
	notify  chan struct{}
	done    chan struct{}

	// idMu guards the packet ids of QoS 1 deliveries awaiting PUBACK and
	// QoS 2 ones awaiting PUBREC or PUBCOMP, and the QoS 2 records.
	idMu     sync.Mutex
	inflight map[uint16]flight // packet id -> engine delivery
	lastID   uint16
	// q2 are a persistent session's outbound QoS 2 records (qos2.go), the
	// session's own map; nil for a clean session. q2seq finds the packet
	// id of a queue entry sent before and not yet PUBRECed.
	q2    map[uint16]*outRec
	q2seq map[entryKey]uint16
	// q2new are records to write, synced, before the next socket write.
	q2new []engine.KVOp

	// held are QoS 1 deliveries waiting for the connection-wide window
	// (several consumers each have credit; the client's Receive Maximum
	// bounds them together [MQTT-3.3.4-9]). Only the writer touches it;
	// it is bounded by consumers x credit.
	held []outItem
}

// flight is a QoS 1 delivery awaiting its PUBACK, or a QoS 2 one awaiting
// PUBREC (then PUBCOMP, once released).
type flight struct {
	queue    string
	tag      uint64
	qos      byte
	released bool // QoS 2: PUBREC seen, PUBREL sent
}

func newOutbox(c *conn) *outbox {
	o := &outbox{
		c:        c,
		notify:   make(chan struct{}, 1),
		done:     make(chan struct{}),
		inflight: make(map[uint16]flight),
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

// pause holds the writer back until resume: deliveries of consumers a
// SUBSCRIBE creates are then written after its SUBACK. Only the read
// goroutine calls it, after draining the pipeline, so no other packet is
// queued meanwhile.
func (o *outbox) pause() {
	o.mu.Lock()
	o.paused, o.pauseAt = true, len(o.items)
	o.mu.Unlock()
}

// resume queues pkt (not bounded: the SUBACK of pause's caller), then the
// retained messages rets (with RETAIN 1; bounded by the retained store,
// QoS 1 ones by the window), ahead of what was delivered since pause, and
// lets the writer go on.
func (o *outbox) resume(pkt []byte, rets ...*engine.Message) {
	o.mu.Lock()
	if !o.closed && pkt != nil {
		at := min(o.pauseAt, len(o.items))
		ins := make([]outItem, 0, 1+len(rets))
		ins = append(ins, outItem{pkt: pkt})
		for _, m := range rets {
			ins = append(ins, outItem{d: engine.Delivery{Msg: m, Count: 1}, retained: true})
		}
		o.items = slices.Insert(o.items, at, ins...)
		o.ctrls++
	}
	o.paused = false
	o.mu.Unlock()
	o.wake()
}

// flush returns once everything queued before it has been written, the
// writer has stopped, or timeout has passed.
func (o *outbox) flush(timeout time.Duration) {
	ch := make(chan struct{})
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return
	}
	o.items = append(o.items, outItem{flushed: ch})
	o.mu.Unlock()
	o.wake()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-o.done:
	case <-t.C:
	}
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
	if len(o.items) == 0 || o.paused {
		return spare[:0], o.closed
	}
	items, o.items = o.items, spare[:0]
	o.topics, o.ctrls = 0, 0
	o.room.Broadcast()
	return items, o.closed
}

// allocID records a QoS 1 or 2 delivery and returns its packet id: the id
// it was sent with before, for a queue entry with a QoS 2 record, or a free
// one. Credit keeps the deliveries awaiting acks at most MaxInflight (<
// 65535), so a free id always exists unless stale QoS 2 records fill the
// space.
//
// resent is set when the id comes from a record: the message was sent
// before, so it goes out with DUP 1 [MQTT-3.3.1-1] even when the engine's
// delivery count, which a crash does not keep, says first attempt.
func (o *outbox) allocID(f flight) (id uint16, resent, ok bool) {
	o.idMu.Lock()
	defer o.idMu.Unlock()
	if f.qos == 2 && f.tag != 0 {
		if id, ok := o.q2seq[entryKey{f.queue, f.tag}]; ok {
			delete(o.q2seq, entryKey{f.queue, f.tag})
			o.inflight[id] = f
			return id, true, true
		}
	}
	for range 1 << 16 {
		o.lastID++
		if o.lastID == 0 {
			continue
		}
		if _, used := o.inflight[o.lastID]; used {
			continue
		}
		if _, used := o.q2[o.lastID]; used {
			continue
		}
		o.inflight[o.lastID] = f
		return o.lastID, false, true
	}
	return 0, false, false
}

// recordQoS2 makes the QoS 2 queue delivery with packet id durable before
// it is written: a persistent session's record, queued for the writer's
// next synced write. A delivery sent before already has one.
func (o *outbox) recordQoS2(id uint16, f flight) {
	if o.q2 == nil || f.tag == 0 {
		return // a clean session, or a retained message (not redelivered)
	}
	o.idMu.Lock()
	defer o.idMu.Unlock()
	if _, ok := o.q2[id]; ok {
		return
	}
	r := &outRec{queue: f.queue, seq: f.tag}
	o.q2[id] = r
	o.q2new = append(o.q2new, engine.KVOp{NS: qos2OutNS, Key: qos2Key(o.c.cl.ID, id), Value: encodeOutRec(*r)})
}

// resumeQoS2 prepares a resumed session's QoS 2 records: released ones
// are in flight again and get their PUBREL re-sent (first, before the
// backlog) [MQTT-4.4.0-1]; the queue entries of sent ones will be sent
// again with their packet ids. Called before the writer runs.
func (o *outbox) resumeQoS2() {
	o.idMu.Lock()
	o.q2seq = make(map[entryKey]uint16)
	var rels []uint16
	for id, r := range o.q2 {
		if r.released {
			o.inflight[id] = flight{queue: r.queue, tag: r.seq, qos: 2, released: true}
			rels = append(rels, id)
		} else {
			o.q2seq[entryKey{r.queue, r.seq}] = id
		}
	}
	o.idMu.Unlock()
	slices.Sort(rels)
	for _, id := range rels {
		o.control(encode(packets.Packet{
			FixedHeader:     packets.FixedHeader{Type: packets.Pubrel, Qos: 1},
			PacketID:        id,
			ProtocolVersion: o.c.cl.Properties.ProtocolVersion,
		}))
	}
}

// flushQoS2 writes the QoS 2 records of deliveries about to be written,
// synced; false if it failed (the writer stops: nothing unrecorded goes
// out).
func (o *outbox) flushQoS2() bool {
	o.idMu.Lock()
	ops := o.q2new
	o.q2new = nil
	o.idMu.Unlock()
	if len(ops) == 0 {
		return true
	}
	if err := o.c.s.b.ApplyKV(ops, true); err != nil {
		o.c.log.Error().Err(err).Msg("storing QoS 2 records")
		o.c.cl.Stop(err)
		return false
	}
	return true
}

// windowFull reports whether the connection has as many QoS 1 deliveries
// awaiting PUBACK as the client accepts.
func (o *outbox) windowFull() bool {
	o.idMu.Lock()
	defer o.idMu.Unlock()
	return len(o.inflight) >= o.c.credit
}

// ackState is what an ack from the client finds of its packet id.
type ackState uint8

const (
	ackUnknown ackState = iota // no delivery with this id (or another QoS)
	ackFirst                   // the delivery it completes
	ackAgain                   // QoS 2: PUBREC for a delivery released already
)

// puback completes a QoS 1 packet id and returns its delivery; the writer
// is woken for deliveries held for the window.
func (o *outbox) puback(id uint16) (flight, bool) {
	o.idMu.Lock()
	f, ok := o.inflight[id]
	ok = ok && f.qos != 2
	if ok {
		delete(o.inflight, id)
	}
	o.idMu.Unlock()
	if ok {
		o.wake()
	}
	return f, ok
}

// pubrec marks a QoS 2 delivery released (its PUBREL follows); its id
// stays in flight until PUBCOMP.
func (o *outbox) pubrec(id uint16) (flight, ackState) {
	o.idMu.Lock()
	defer o.idMu.Unlock()
	f, ok := o.inflight[id]
	switch {
	case !ok || f.qos != 2:
		return f, ackUnknown
	case f.released:
		return f, ackAgain
	}
	f.released = true
	o.inflight[id] = f
	return f, ackFirst
}

// pubcomp ends a released QoS 2 delivery.
func (o *outbox) pubcomp(id uint16) (flight, bool) {
	o.idMu.Lock()
	f, ok := o.inflight[id]
	ok = ok && f.qos == 2 && f.released
	if ok {
		delete(o.inflight, id)
	}
	o.idMu.Unlock()
	if ok {
		o.wake()
	}
	return f, ok
}

// drop frees a packet id whatever its state, with its QoS 2 record;
// whether the record existed is reported, for the caller to delete it.
func (o *outbox) drop(id uint16) (hadRecord bool) {
	o.idMu.Lock()
	_, ok := o.inflight[id]
	delete(o.inflight, id)
	if r, rec := o.q2[id]; rec {
		delete(o.q2, id)
		delete(o.q2seq, entryKey{r.queue, r.seq})
		hadRecord = true
	}
	o.idMu.Unlock()
	if ok {
		o.wake()
	}
	return hadRecord
}

// run is the writer goroutine.
func (o *outbox) run() {
	defer close(o.done)
	defer o.shut()
	var (
		items []outItem
		buf   []byte
		pb    bytes.Buffer
		acks  []flight // queue deliveries done once written
		held  []outItem
		dones []chan struct{} // flush barriers of this round
	)
	for {
		var closed bool
		items, closed = o.take(items)
		if len(items) == 0 && (len(o.held) == 0 || o.windowFull()) {
			if closed {
				return
			}
			<-o.notify
			continue
		}
		now := time.Now()
		buf, acks = buf[:0], acks[:0]
		// Held deliveries first, in arrival order, as the window allows.
		held, o.held = o.held, held[:0]
		for i := range held {
			var ok bool
			buf, acks, ok = o.appendItem(buf, &pb, acks, &held[i], now)
			if !ok {
				return
			}
		}
		clear(held)
		dones = dones[:0]
		for i := range items {
			if items[i].flushed != nil {
				dones = append(dones, items[i].flushed)
				continue
			}
			var ok bool
			buf, acks, ok = o.appendItem(buf, &pb, acks, &items[i], now)
			if !ok {
				return
			}
		}
		clear(items)
		if !o.flushQoS2() {
			return
		}
		if len(buf) > 0 && !o.write(buf) {
			return
		}
		for _, ch := range dones {
			close(ch)
		}
		o.ackWritten(acks)
		if cap(buf) > 1<<20 {
			buf = nil
		}
	}
}

// appendItem appends an encoded packet or a delivery to buf, or holds a
// QoS 1 delivery while the window is full. false means the writer must
// stop (no packet id was free).
func (o *outbox) appendItem(buf []byte, pb *bytes.Buffer, acks []flight, it *outItem, now time.Time) ([]byte, []flight, bool) {
	if it.pkt != nil {
		return append(buf, it.pkt...), acks, true
	}
	if (it.d.Tag != 0 || (it.retained && it.d.Msg.QoS > 0)) && (len(o.held) > 0 || o.windowFull()) {
		o.held = append(o.held, *it) // order kept behind earlier held ones
		return buf, acks, true
	}
	buf, acks, ok := o.appendDelivery(buf, pb, acks, it.d, it.retained, now)
	if !ok {
		o.c.log.Error().Msg("no free packet id")
		o.c.cl.Stop(packets.ErrQuotaExceeded)
	}
	return buf, acks, ok
}

// appendDelivery encodes a delivery as a PUBLISH, or decides to skip it.
// Queue deliveries that need no PUBACK are added to acks. false means no
// packet id was free.
func (o *outbox) appendDelivery(buf []byte, pb *bytes.Buffer, acks []flight, d engine.Delivery, retained bool, now time.Time) ([]byte, []flight, bool) {
	c := o.c
	m := d.Msg
	fromQueue := d.Tag != 0
	fl := flight{queue: d.Queue, tag: d.Tag}
	topic := m.Topic
	c.mu.Lock()
	var mt match
	var skip bool
	retain := false
	switch {
	case retained:
		// Sent for a SUBSCRIBE: RETAIN 1 [MQTT-3.3.1-8]; No Local does not
		// apply, nor does the session queue's copy.
		mt = c.matchLocked(m.Topic)
		skip, retain = !mt.any, true
	case d.Queue != "" && d.Queue != c.queue:
		// A $queue/ or $share/ consumer.
		so, ok := c.consumerSubLocked(d.Queue)
		mt = match{any: ok, qos: so.qos}
		if ok && so.kind == kindQueue {
			topic = queuePrefix + m.Topic
		}
		skip = !ok
	default:
		mt = c.matchLocked(m.Topic)
		skip = !mt.any || // unsubscribed since
			(!fromQueue && mt.bound) || // the session queue carries this message
			(mt.allNoLocal && m.Origin == c.origin) // No Local [MQTT-3.8.3-3]
		// A live delivery has RETAIN 0 [MQTT-3.3.1-9], except to an MQTT 5
		// subscription with Retain As Published [MQTT-3.3.1-12].
		retain = c.v5 && mt.rap && m.Retain
	}
	c.mu.Unlock()
	if skip || m.Expired(now) {
		if fromQueue {
			acks = append(acks, fl)
		}
		return buf, acks, true
	}
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: min(m.QoS, mt.qos), Dup: d.Count > 1 && min(m.QoS, mt.qos) > 0, Retain: retain},
		TopicName:       topic,
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
		fl.qos = pk.FixedHeader.Qos
		id, resent, ok := o.allocID(fl)
		if !ok {
			return buf, acks, false
		}
		pk.PacketID = id
		pk.FixedHeader.Dup = pk.FixedHeader.Dup || resent
	} else if fromQueue {
		acks = append(acks, fl) // QoS 0: at most once, done once written
	}
	pb.Reset()
	if err := pk.PublishEncode(pb); err != nil {
		c.log.Error().Err(err).Msg("encoding PUBLISH")
		return buf, o.discard(acks, pk.PacketID, fl), true
	}
	if max := c.cl.Properties.Props.MaximumPacketSize; max > 0 && uint32(pb.Len()) > max {
		// Discarded as if sent [MQTT-3.1.2-25].
		c.log.Debug().Int("size", pb.Len()).Uint32("max", max).Msg("delivery over the client's maximum packet size discarded")
		return buf, o.discard(acks, pk.PacketID, fl), true
	}
	if pk.FixedHeader.Qos == 2 {
		o.recordQoS2(pk.PacketID, fl)
	}
	return append(buf, pb.Bytes()...), acks, true
}

// discard drops an encoded delivery: its id is freed and its queue entry
// acked.
func (o *outbox) discard(acks []flight, id uint16, fl flight) []flight {
	if id != 0 {
		if o.drop(id) {
			// A delivery sent before and now too large: its record goes
			// (unsynced: a stale one only reserves an id).
			_ = o.c.s.b.ApplyKV([]engine.KVOp{{NS: qos2OutNS, Key: qos2Key(o.c.cl.ID, id), Delete: true}}, false)
		}
		return append(acks, fl)
	}
	return acks // a QoS 0 queue delivery is in acks already
}

func (o *outbox) ackWritten(acks []flight) {
	c := o.c
	for len(acks) > 0 {
		q := acks[0].queue
		var tags []uint64
		rest := acks[:0]
		for _, f := range acks {
			if f.queue == q {
				tags = append(tags, f.tag)
			} else {
				rest = append(rest, f)
			}
		}
		acks = rest
		c.mu.Lock()
		cons := c.cons[q]
		c.mu.Unlock()
		if cons == nil {
			continue // unsubscribed: they went back to the queue
		}
		// At most once (QoS 0 or skipped): no fsync needed; a crash may
		// deliver them again.
		if err := cons.Ack(false, tags...); err != nil && !errors.Is(err, engine.ErrClosed) && !errors.Is(err, engine.ErrConsumerClosed) {
			c.log.Debug().Err(err).Msg("ack of written deliveries")
		}
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
