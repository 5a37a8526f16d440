package stomp

import (
	"strconv"
	"sync"
	"time"

	"github.com/go-stomp/stomp/v3/frame"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/protocol"
)

// writeTimeout bounds one write to the socket: a peer that stops reading is
// disconnected rather than holding its messages forever.
const writeTimeout = 30 * time.Second

// outItem is one frame waiting for the writer: a control frame or a
// delivery to encode.
type outItem struct {
	f     *frame.Frame
	close bool // close the connection once f is written
	sub   *subscription
	d     engine.Delivery
}

// outbox is a connection's outbound queue: a mutex-guarded slice and a
// wake-up channel of capacity one. Queue deliveries are bounded by their
// subscriptions' credit; topic deliveries by Config.TopicBuffer.
type outbox struct {
	c      *conn
	mu     sync.Mutex
	items  []outItem
	topics int // topic deliveries in items
	closed bool
	drops  uint64
	notify chan struct{}
	hb     time.Duration // heart-beat send interval, 0 for none
	topicN uint64        // message-id counter of topic deliveries (writer only)
}

func newOutbox(c *conn) *outbox {
	return &outbox{c: c, notify: make(chan struct{}, 1)}
}

func (o *outbox) push(it outItem) bool {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return false
	}
	if it.sub != nil && it.d.Tag == 0 {
		if o.topics >= o.c.s.cfg.TopicBuffer {
			o.drops++
			first := o.drops == 1
			o.mu.Unlock()
			o.c.s.Dropped.Add(1)
			if first {
				o.c.log.Warn().Int("buffer", o.c.s.cfg.TopicBuffer).Msg("slow consumer: dropping topic messages")
			}
			return false
		}
		o.topics++
	}
	o.items = append(o.items, it)
	o.mu.Unlock()
	select {
	case o.notify <- struct{}{}:
	default:
	}
	return true
}

// deliver queues a MESSAGE.
func (o *outbox) deliver(s *subscription, d engine.Delivery) {
	o.push(outItem{sub: s, d: d})
}

// control queues a frame the server sends on its own (nil is nothing);
// with closeAfter the connection closes once it is written.
func (o *outbox) control(f *frame.Frame, closeAfter bool) {
	if f == nil && !closeAfter {
		return
	}
	o.push(outItem{f: f, close: closeAfter})
}

// error queues an ERROR frame and the close after it.
func (o *outbox) error(pe *protoError, v Version) {
	f := frame.New(frame.ERROR, frame.Message, pe.msg)
	if pe.frame != nil {
		if id, ok := pe.frame.Header.Contains(frame.Receipt); ok {
			f.Header.Add(frame.ReceiptId, id)
		}
	}
	if pe.msg == "supported protocol versions are 1.0 1.1 1.2" {
		f.Header.Add(frame.Version, "1.0,1.1,1.2")
	}
	f.Header.Add(frame.ContentType, "text/plain")
	f.Body = []byte(pe.Error())
	o.control(f, true)
}

func (o *outbox) setHeartBeat(d time.Duration) {
	o.mu.Lock()
	o.hb = d
	o.mu.Unlock()
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

// take swaps out the queued items. With none queued it swaps nothing:
// handing o.items' empty array out while installing spare's would leave
// the caller's spare and o.items on one array, and push would then
// overwrite frames the writer is still encoding.
func (o *outbox) take(spare []outItem) ([]outItem, time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.items) == 0 {
		return nil, o.hb
	}
	items := o.items
	o.items = spare[:0]
	o.topics = 0
	return items, o.hb
}

// run is the writer: it encodes queued frames into one buffer per wake-up,
// acks what auto-ack subscriptions are sent, writes the buffer, and sends
// heart-beats when the connection is otherwise quiet.
func (o *outbox) run() {
	c := o.c
	defer func() {
		o.mu.Lock()
		o.closed = true
		o.items = nil
		o.mu.Unlock()
	}()
	var (
		buf   []byte
		spare []outItem
		acks  = map[*subscription][]uint64{}
		timer *time.Timer
		timeC <-chan time.Time
	)
	for {
		items, hb := o.take(spare)
		if len(items) == 0 {
			if hb > 0 && timer == nil {
				timer = time.NewTimer(hb)
				timeC = timer.C
			}
			select {
			case <-o.notify:
				continue
			case <-timeC:
				timer = nil
				timeC = nil
				if !o.write([]byte{'\n'}) {
					return
				}
				continue
			case <-c.done:
				if timer != nil {
					timer.Stop()
				}
				return
			}
		}
		closeAfter := false
		buf = buf[:0]
		for i := range items {
			it := &items[i]
			switch {
			case it.sub != nil:
				buf = o.appendMessage(buf, it.sub, it.d)
				if it.sub.mode == ackAuto && it.d.Tag != 0 {
					acks[it.sub] = append(acks[it.sub], it.d.Tag)
				}
			case it.f != nil:
				escape := c.version() != V10 && it.f.Command != frame.CONNECTED
				buf = AppendFrame(buf, it.f, c.version(), escape)
			}
			if it.close {
				closeAfter = true
				break
			}
		}
		clear(items)
		spare = items
		// ack:auto messages are acked before they are written, not after:
		// a client that has read one may UNSUBSCRIBE (or leave) at once,
		// and the processor then closes the consumer, which would return
		// a message still unacked to the queue for a second delivery.
		// ack:auto is at most once either way: a write that succeeds only
		// reached the kernel.
		for sub, tags := range acks {
			if err := sub.autoAck(tags); err != nil && !sub.closed.Load() {
				c.log.Debug().Err(err).Str("sub", sub.id).Msg("auto ack")
			}
			delete(acks, sub)
		}
		if len(buf) > 0 && !o.write(buf) {
			return
		}
		if timer != nil {
			timer.Stop()
			timer, timeC = nil, nil
		}
		if closeAfter {
			c.shutdown()
			return
		}
		if cap(buf) > 1<<20 {
			buf = nil
		}
	}
}

func (o *outbox) write(b []byte) bool {
	c := o.c
	if err := c.nc.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		c.shutdown()
		return false
	}
	if _, err := c.nc.Write(b); err != nil {
		c.log.Debug().Err(err).Msg("write")
		c.shutdown()
		return false
	}
	return true
}

// appendMessage encodes a delivery as a MESSAGE frame.
func (o *outbox) appendMessage(buf []byte, s *subscription, d engine.Delivery) []byte {
	c := o.c
	m := d.Msg
	var id string
	if d.Tag != 0 {
		id = ackID(s.num, d.Tag)
	} else {
		o.topicN++
		id = topicMsgID(s.num, o.topicN)
	}
	f := frame.New(frame.MESSAGE,
		frame.Subscription, s.id,
		frame.MessageId, id,
		frame.Destination, protocol.STOMPDestination(m.Topic, m.ToQueue))
	if c.version() == V12 && s.mode != ackAuto {
		f.Header.Add(frame.Ack, id)
	}
	if d.Tag != 0 {
		// Always present, as RabbitMQ sends it: a client can tell a first
		// delivery from a header that is simply missing.
		f.Header.Add("redelivered", strconv.FormatBool(d.Count > 1))
		f.Header.Add("x-delivery-count", strconv.FormatUint(uint64(d.Count), 10))
	}
	f.Header.Add(frame.ContentLength, strconv.Itoa(len(m.Body)))
	for _, p := range m.Props {
		// A property named like a header the broker sets (an MQTT 5 user
		// property "ack" or "message-id") would pass for the broker's own:
		// it is left out. STOMP SENDs never carry them (frameHeaders).
		if !frameHeaders[p.Key] {
			f.Header.Add(p.Key, p.Value)
		}
	}
	f.Body = m.Body
	return AppendFrame(buf, f, c.version(), c.version() != V10)
}
