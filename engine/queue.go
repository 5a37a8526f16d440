package engine

import (
	"sync"
	"time"
)

// Queue is an anycast address: each message goes to one of its consumers.
//
// Everything below mu is guarded by it. Methods named …Locked need it held.
// No method holds a queue's mu while it takes another queue's mu or while it
// applies a batch to the store; store reads (window refills) do happen under
// mu, which keeps a refill and a concurrent commit from missing each other.
type Queue struct {
	b       *Broker
	name    string
	durable bool

	mu        sync.Mutex
	opts      QueueOptions
	policy    Policy
	ready     window
	sched     window
	returned  returnedList
	unacked   map[uint64]*qentry
	consumers []*Consumer
	rr        int
	// count and bytes cover every entry the queue holds: ready, scheduled,
	// unacked and reserved by commits under way.
	count, bytes int64
	// limbo counts entries that have left the queue in memory but whose
	// removal from the store has not been applied yet.
	limbo    int
	acks     int // ready-index acks since the last trim
	trimmed  uint64
	timer    Timer
	timerAt  int64
	deleted  bool
	stats    QueueStats
	windowSz int
	windowB  int64
}

// QueueStats are cumulative counters of a queue since the broker started.
type QueueStats struct {
	Published, Delivered, Acked, Redelivered, DeadLettered, Expired, Dropped uint64
}

// QueueInfo describes a queue at one moment.
type QueueInfo struct {
	Name    string
	Durable bool
	// Policy is the queue's effective policy; Override the queue's own
	// settings in it (SetPolicy, DeclareQueue), over the configured
	// default and rules.
	Policy    Policy
	Override  Policy
	Messages  int64 // ready + scheduled + unacked
	Bytes     int64
	Unacked   int
	Consumers int
	Stats     QueueStats
	// Oldest is the publish time (Unix nanoseconds) of the oldest message
	// the queue holds, 0 when it holds none. Only QueueFigures and
	// QueueFigure fill it in.
	Oldest int64
}

// Sink receives deliveries. Deliver is called with the queue's lock held: it
// must not block and must not call back into the engine. Adapters hand the
// delivery to the connection's writer and return.
type Sink interface {
	Deliver(d Delivery)
}

// Delivery is one message handed to a consumer or topic subscriber.
type Delivery struct {
	// Queue is the queue the message came from, "" for a topic delivery.
	Queue string
	// Tag identifies the delivery for Ack and Nack; 0 for topic deliveries
	// and auto-acked ones.
	Tag uint64
	// Msg is shared and must not be modified.
	Msg *Message
	// Count is the delivery attempt, starting at 1.
	Count uint32
}

// Redelivered reports whether the message was delivered before.
func (d Delivery) Redelivered() bool { return d.Count > 1 }

// ConsumeOptions configure a consumer.
type ConsumeOptions struct {
	// Credit is the most unacked messages the consumer holds at once (its
	// prefetch window). 0 means 100.
	Credit int
	// AutoAck removes each message as it is delivered (at most once).
	AutoAck bool
}

// MaxCredit bounds a consumer's credit window.
const MaxCredit = 65535

// Consumer is one competing consumer of a queue.
type Consumer struct {
	q       *Queue
	sink    Sink
	autoAck bool
	// guarded by q.mu
	credit  int
	unacked int
	closed  bool
}

// Queue returns the name of the queue the consumer reads.
func (c *Consumer) Queue() string { return c.q.name }

func (q *Queue) win(idx Index) *window {
	if idx == Scheduled {
		return &q.sched
	}
	return &q.ready
}

// room reports whether a committed entry of size n fits in w's memory.
func (q *Queue) room(w *window, n int64) bool {
	return !q.durable || (w.len() < q.windowSz && w.bytes+n <= q.windowB)
}

// effects are what a locked section leaves to do once the lock is released:
// store writes, entries to place once those writes are applied, dead letters.
type effects struct {
	batch  Batch
	sync   bool
	placed []*qentry // entries reserved in q's windows by batch
	dead   []deadLetter
}

type deadLetter struct {
	e      *qentry
	reason string
}

func (fx *effects) empty() bool {
	return fx.batch.Len() == 0 && len(fx.placed) == 0 && len(fx.dead) == 0
}

// unlockAndRun releases q.mu and carries out fx, then whatever that leaves.
func (q *Queue) unlockAndRun(fx *effects) error {
	q.mu.Unlock()
	var firstErr error
	for !fx.empty() {
		var next effects
		if err := q.b.runEffects(q, fx, &next); err != nil && firstErr == nil {
			firstErr = err
		}
		fx.batch.recycle()
		*fx = next
	}
	return firstErr
}

// leaveLocked accounts for e leaving the queue and adds its removal from the
// store to b.
func (q *Queue) leaveLocked(e *qentry, b *Batch) {
	q.count--
	q.bytes -= e.size
	if !q.durable {
		return
	}
	b.DeleteEntry(q.name, e.idx, e.Key)
	b.AddCounts(q.name, -1, -e.size)
	if e.Shared {
		q.b.releaseRef(e.MsgID, b)
	}
}

// refillLocked reads the next entries of w's index from the store when the
// window runs low.
func (q *Queue) refillLocked(w *window, idx Index) error {
	if !w.more || w.len() > q.windowSz/2 {
		return nil
	}
	limit := q.windowSz - w.len()
	n := 0
	err := q.b.store.Scan(q.name, idx, w.loaded, limit, func(se Entry) error {
		n++
		w.loaded = se.Key
		if _, ok := w.pending[se.Key]; ok {
			return nil // its commit is still being placed and will insert it
		}
		e := &qentry{Entry: se, idx: idx, size: se.Msg.Size()}
		w.insert(e)
		return nil
	})
	if err != nil {
		return err
	}
	if n < limit {
		w.more = false
	}
	return nil
}

// nextLocked takes the next deliverable entry: returned ones first, then due
// scheduled ones, then the ready window. Expired entries met on the way are
// dead-lettered, so an expired message is never delivered.
func (q *Queue) nextLocked(now int64, fx *effects) *qentry {
	for {
		var e *qentry
		if len(q.returned) > 0 {
			e = q.returned.pop()
		} else {
			if err := q.refillLocked(&q.sched, Scheduled); err != nil {
				q.b.storeError(err)
				return nil
			}
			if s := q.sched.peek(); s != nil && int64(s.Key.Hi) <= now {
				e = q.sched.pop()
			} else {
				if err := q.refillLocked(&q.ready, Ready); err != nil {
					q.b.storeError(err)
					return nil
				}
				if q.ready.len() == 0 {
					return nil
				}
				e = q.ready.pop()
			}
		}
		if e.ExpiresAt != 0 && now >= e.ExpiresAt {
			q.deadLocked(e, DeathExpired, fx)
			continue
		}
		return e
	}
}

// deadLocked takes e out of the queue towards its dead-letter queue.
func (q *Queue) deadLocked(e *qentry, reason string, fx *effects) {
	switch reason {
	case DeathExpired:
		q.stats.Expired++
	default:
		q.stats.DeadLettered++
	}
	q.count--
	q.bytes -= e.size
	q.limbo++
	fx.dead = append(fx.dead, deadLetter{e, reason})
}

// nextConsumerLocked picks the next consumer with credit, round robin.
func (q *Queue) nextConsumerLocked() *Consumer {
	n := len(q.consumers)
	for i := 0; i < n; i++ {
		c := q.consumers[(q.rr+i)%n]
		if c.unacked < c.credit {
			q.rr = (q.rr + i + 1) % n
			return c
		}
	}
	return nil
}

// dispatchLocked hands ready entries to consumers with credit.
func (q *Queue) dispatchLocked(fx *effects) {
	if q.deleted {
		return
	}
	now := q.b.clock.Now().UnixNano()
	for {
		c := q.nextConsumerLocked()
		if c == nil {
			break
		}
		e := q.nextLocked(now, fx)
		if e == nil {
			break
		}
		e.Deliveries++
		q.stats.Delivered++
		if e.Deliveries > 1 {
			q.stats.Redelivered++
		}
		d := Delivery{Queue: q.name, Tag: e.Seq, Msg: e.Msg, Count: e.Deliveries}
		if c.autoAck {
			d.Tag = 0
			q.stats.Acked++
			q.leaveLocked(e, &fx.batch)
		} else {
			e.consumer = c
			c.unacked++
			q.unacked[e.Seq] = e
		}
		c.sink.Deliver(d)
	}
	q.armTimerLocked(now)
}

// armTimerLocked makes sure the queue wakes up when its earliest scheduled
// entry falls due or its oldest entry expires.
func (q *Queue) armTimerLocked(now int64) {
	var at int64
	consider := func(t int64) {
		if t > 0 && (at == 0 || t < at) {
			at = t
		}
	}
	if s := q.sched.peek(); s != nil {
		// A due entry that nobody could take waits for credit, not a timer.
		if due := int64(s.Key.Hi); len(q.consumers) > 0 && due > now {
			consider(due)
		}
		consider(s.ExpiresAt)
	}
	q.ready.each(func(e *qentry) bool {
		consider(e.ExpiresAt)
		return q.policy.TTL == 0 // queue TTL expires in order: the head is enough
	})
	if at == 0 || q.deleted {
		return
	}
	if q.timer != nil && q.timerAt != 0 && q.timerAt <= at {
		return
	}
	if q.timer != nil {
		q.timer.Stop()
	}
	q.timerAt = at
	d := time.Duration(at - now)
	if d < 0 {
		d = 0
	}
	q.timer = q.b.clock.AfterFunc(d, q.onTimer)
}

func (q *Queue) onTimer() {
	if !q.b.enter() {
		return
	}
	defer q.b.leave()
	q.mu.Lock()
	q.timer, q.timerAt = nil, 0
	var fx effects
	q.expireLocked(&fx)
	q.dispatchLocked(&fx)
	if err := q.unlockAndRun(&fx); err != nil {
		q.b.storeError(err)
	}
}

// expireLocked dead-letters expired entries wherever they sit in memory,
// whether or not anyone consumes the queue.
func (q *Queue) expireLocked(fx *effects) {
	now := q.b.clock.Now().UnixNano()
	for _, w := range []*window{&q.ready, &q.sched} {
		var expired []*qentry
		w.each(func(e *qentry) bool {
			if e.ExpiresAt != 0 && now >= e.ExpiresAt {
				expired = append(expired, e)
			}
			return true
		})
		for _, e := range expired {
			w.remove(e)
			q.deadLocked(e, DeathExpired, fx)
		}
	}
}

// returnLocked gives an entry taken back from a consumer a new chance:
// after delay (0: at once, ahead of the ready window), or to the dead-letter
// queue when it has used up its deliveries.
func (q *Queue) returnLocked(e *qentry, delay time.Duration, fx *effects) {
	e.consumer = nil
	if q.policy.MaxDeliveries > 0 && e.Deliveries >= uint32(q.policy.MaxDeliveries) {
		q.deadLocked(e, DeathMaxDeliveries, fx)
		return
	}
	if delay <= 0 {
		if q.durable {
			fx.batch.PutEntry(q.name, e.idx, e.Entry) // keeps the delivery count
		}
		q.returned.push(e)
		return
	}
	due := uint64(q.b.clock.Now().Add(delay).UnixNano())
	if q.durable {
		fx.batch.DeleteEntry(q.name, e.idx, e.Key)
	}
	e.idx, e.Key = Scheduled, Key{Hi: due, Lo: e.Seq}
	q.sched.pending[e.Key] = struct{}{}
	if q.durable {
		fx.batch.PutEntry(q.name, Scheduled, e.Entry)
	}
	fx.placed = append(fx.placed, e)
}

// placeLocked puts entries whose batch has been applied into their windows.
func (q *Queue) placeLocked(es []*qentry) {
	for _, e := range es {
		w := q.win(e.idx)
		if !w.committed(e, q.room(w, e.size)) {
			e.Msg = nil // it waits on disk
		}
	}
}

// unplaceLocked undoes reservations whose batch failed.
func (q *Queue) unplaceLocked(es []*qentry) {
	for _, e := range es {
		delete(q.win(e.idx).pending, e.Key)
		q.count--
		q.bytes -= e.size
	}
}

// trimLocked adds a TrimReady below the lowest ready-index seq still live,
// so acknowledged history costs later scans nothing.
func (q *Queue) trimLocked(b *Batch) {
	if !q.durable || q.limbo > 0 || q.acks < 4096 {
		return
	}
	q.acks = 0
	floor := q.ready.loaded.Lo + 1
	low := func(s uint64) {
		if s < floor {
			floor = s
		}
	}
	if e := q.ready.peek(); e != nil {
		low(e.Seq)
	}
	for k := range q.ready.pending {
		low(k.Lo)
	}
	for _, e := range q.returned {
		if e.idx == Ready {
			low(e.Seq)
		}
	}
	for _, e := range q.unacked {
		if e.idx == Ready {
			low(e.Seq)
		}
	}
	if floor > q.trimmed+1 {
		b.TrimReady(q.name, floor)
		q.trimmed = floor - 1
	}
}

// SetCredit changes the consumer's credit window.
func (c *Consumer) SetCredit(n int) {
	q := c.q
	q.mu.Lock()
	c.credit = clampCredit(n)
	var fx effects
	q.dispatchLocked(&fx)
	if err := q.unlockAndRun(&fx); err != nil {
		q.b.storeError(err)
	}
}

func clampCredit(n int) int {
	switch {
	case n <= 0:
		return 100
	case n > MaxCredit:
		return MaxCredit
	}
	return n
}

// Ack acknowledges deliveries: their messages leave the queue. With sync it
// returns once the removal is on stable storage. Tags the consumer does not
// hold are skipped and reported with ErrUnknownTag.
func (c *Consumer) Ack(sync bool, tags ...uint64) error {
	if !c.q.b.enter() {
		return ErrClosed
	}
	defer c.q.b.leave()
	q := c.q
	var fx effects
	fx.sync = sync
	var unknown error
	q.mu.Lock()
	for _, tag := range tags {
		e := q.unacked[tag]
		if e == nil || e.consumer != c || e.acking {
			unknown = ErrUnknownTag
			continue
		}
		q.ackLocked(e, &fx.batch)
	}
	q.trimLocked(&fx.batch)
	q.dispatchLocked(&fx)
	if err := q.unlockAndRun(&fx); err != nil {
		return err
	}
	return unknown
}

func (q *Queue) ackLocked(e *qentry, b *Batch) {
	delete(q.unacked, e.Seq)
	e.consumer.unacked--
	e.consumer = nil
	q.stats.Acked++
	if e.idx == Ready {
		q.acks++
	}
	q.leaveLocked(e, b)
}

// Nack refuses a delivery: the message comes back after the queue's
// redelivery delay, or goes to the dead-letter queue once it has had
// max_deliveries attempts.
func (c *Consumer) Nack(tag uint64) error {
	return c.giveBack(tag, true)
}

// Release returns a delivery at once, without the redelivery delay (the
// attempt still counts).
func (c *Consumer) Release(tag uint64) error {
	return c.giveBack(tag, false)
}

func (c *Consumer) giveBack(tag uint64, backoff bool) error {
	if !c.q.b.enter() {
		return ErrClosed
	}
	defer c.q.b.leave()
	q := c.q
	q.mu.Lock()
	e := q.unacked[tag]
	if e == nil || e.consumer != c || e.acking {
		q.mu.Unlock()
		return ErrUnknownTag
	}
	delete(q.unacked, tag)
	c.unacked--
	var fx effects
	var delay time.Duration
	if backoff {
		delay = time.Duration(q.b.backoff(q.policy, e.Deliveries))
	}
	q.returnLocked(e, delay, &fx)
	q.dispatchLocked(&fx)
	return q.unlockAndRun(&fx)
}

// Close detaches the consumer. Its unacked messages go back to the queue at
// once (each counts as an attempt).
func (c *Consumer) Close() error {
	q := c.q
	q.mu.Lock()
	if c.closed {
		q.mu.Unlock()
		return nil
	}
	c.closed = true
	for i, o := range q.consumers {
		if o == c {
			q.consumers = append(q.consumers[:i], q.consumers[i+1:]...)
			break
		}
	}
	var fx effects
	var mine []*qentry
	for _, e := range q.unacked {
		if e.consumer == c && !e.acking {
			mine = append(mine, e)
		}
	}
	for _, e := range mine {
		delete(q.unacked, e.Seq)
		c.unacked--
		q.returnLocked(e, 0, &fx)
	}
	q.dispatchLocked(&fx)
	if !q.b.enter() {
		q.mu.Unlock()
		return nil
	}
	defer q.b.leave()
	return q.unlockAndRun(&fx)
}
