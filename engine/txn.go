package engine

import (
	"errors"
	"fmt"
	"sync"
)

// Txn is a set of publishes, acks and adapter key-value writes that apply
// atomically on Commit (one store batch) or not at all. It is not safe for
// concurrent use.
//
// A transaction from Begin is all or nothing: one refused publish fails the
// commit. A batch from BeginBatch makes its publishes independent: a
// refused one is left out (PublishErr says why) and the rest, the acks and
// the key-value writes still commit together.
type Txn struct {
	b    *Broker
	pubs []*Message
	acks []txnAck
	kv   []KVOp
	// Sync makes Commit wait for stable storage even when nothing in the
	// transaction would require it. Commit syncs anyway when it acks a
	// message of a durable queue or puts a QoS > 0 message into one; the
	// key-value writes are synced only then or with Sync, so a commit of
	// key-value writes alone syncs exactly when Sync is set.
	Sync bool
	done bool
	// batch makes the publishes independent (BeginBatch): errs[i] is the
	// refusal of pubs[i], and refused publishes are left out.
	batch bool
	errs  []error
	// kvErr is the first invalid key-value write; Commit fails with it.
	kvErr error
	// err is what Commit returned (ErrTxnDone after Abort).
	err error
}

type txnAck struct {
	c   *Consumer
	tag uint64
	e   *qentry
}

// Begin starts a transaction.
func (b *Broker) Begin() *Txn { return &Txn{b: b} }

// Publish adds a publish to the transaction. The engine sets m.ID and
// m.PublishedAt on commit; m must not be changed afterwards. An invalid
// destination is refused at once; in a batch the call still counts for
// PublishErr.
func (tx *Txn) Publish(m *Message) error {
	if tx.done {
		return ErrTxnDone
	}
	err := validateDestination(m)
	if err == nil {
		err = tx.b.diskAlarmErr()
	}
	if tx.batch {
		tx.pubs = append(tx.pubs, m)
		tx.errs = append(tx.errs, err)
		return err
	}
	if err != nil {
		return err
	}
	tx.pubs = append(tx.pubs, m)
	return nil
}

func validateDestination(m *Message) error {
	if m.ToQueue {
		return ValidateQueueName(m.Topic)
	}
	return ValidateTopic(m.Topic)
}

// Ack adds the acknowledgement of a delivery of c to the transaction.
func (tx *Txn) Ack(c *Consumer, tag uint64) error {
	if tx.done {
		return ErrTxnDone
	}
	tx.acks = append(tx.acks, txnAck{c: c, tag: tag})
	return nil
}

// Abort discards the transaction.
func (tx *Txn) Abort() {
	if !tx.done {
		tx.err = ErrTxnDone
	}
	tx.done = true
	tx.pubs, tx.acks, tx.kv = nil, nil, nil
}

// Publish publishes one message: to every subscriber and bound queue of a
// topic, or into a queue (declared if needed). When the message has QoS > 0
// and reaches a durable queue, Publish returns only once it is on stable
// storage. A queue over its limit with overflow reject-publish refuses the
// whole publish with ErrQueueFull.
func (b *Broker) Publish(m *Message) error {
	tx := Txn{b: b}
	if err := tx.Publish(m); err != nil {
		return err
	}
	return tx.Commit()
}

// placement is an entry reserved in a queue by a commit.
type placement struct {
	q *Queue
	e *qentry
}

// scratch holds per-commit buffers reused across commits.
type scratch struct {
	routes []*route
	queues []*Queue
	places []placement
	subs   []subDelivery
	seen   subSet // deduplicates subscriptions with several filters
	batch  Batch
}

// subDelivery is a message for a topic subscriber.
type subDelivery struct {
	s *TopicSub
	m *Message
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// Commit applies the transaction. An invalid key-value write (PutKV,
// DeleteKV) fails it with ErrInvalidKV before anything is applied.
func (tx *Txn) Commit() error {
	if tx.done {
		return ErrTxnDone
	}
	tx.done = true
	tx.err = tx.commit()
	return tx.err
}

func (tx *Txn) commit() error {
	if tx.kvErr != nil {
		return tx.kvErr
	}
	b := tx.b
	if !b.enter() {
		return ErrClosed
	}
	defer b.leave()
	sc := scratchPool.Get().(*scratch)
	defer func() {
		clear(sc.routes)
		clear(sc.queues)
		clear(sc.places)
		clear(sc.subs)
		if len(sc.seen.slots) > 0 {
			clear(sc.seen.slots)
			sc.seen.slots = sc.seen.slots[:0]
		}
		sc.routes, sc.queues, sc.places, sc.subs = sc.routes[:0], sc.queues[:0], sc.places[:0], sc.subs[:0]
		sc.batch.Reset()
		scratchPool.Put(sc)
	}()
	if err := tx.holdAcks(); err != nil {
		return err
	}
	var effs []queueEffects
	err := tx.reserve(sc, &effs)
	if err == nil {
		err = tx.apply(sc)
	}
	for _, qe := range effs {
		qe.q.mu.Lock()
		if rerr := qe.q.unlockAndRun(&qe.fx); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}

type queueEffects struct {
	q  *Queue
	fx effects
}

// holdAcks marks every acked delivery so that nothing else settles it while
// the commit runs.
func (tx *Txn) holdAcks() error {
	for i := range tx.acks {
		a := &tx.acks[i]
		q := a.c.q
		q.mu.Lock()
		e := q.unacked[a.tag]
		if e == nil || e.consumer != a.c || e.acking {
			q.mu.Unlock()
			tx.releaseAcks(i)
			return fmt.Errorf("%w: %d on queue %q", ErrUnknownTag, a.tag, q.name)
		}
		e.acking = true
		a.e = e
		q.mu.Unlock()
	}
	return nil
}

// releaseAcks undoes holdAcks for the first n acks.
func (tx *Txn) releaseAcks(n int) {
	for _, a := range tx.acks[:n] {
		q := a.c.q
		q.mu.Lock()
		a.e.acking = false
		if a.c.closed && a.e.consumer == a.c {
			var fx effects
			delete(q.unacked, a.e.Seq)
			a.c.unacked--
			q.returnLocked(a.e, 0, &fx)
			q.dispatchLocked(&fx)
			if err := q.unlockAndRun(&fx); err != nil {
				q.b.storeError(err)
			}
			continue
		}
		q.mu.Unlock()
	}
}

// reserve routes every publish and reserves its entries in the target
// queues. On error every reservation is undone.
func (tx *Txn) reserve(sc *scratch, effs *[]queueEffects) (err error) {
	b := tx.b
	now := b.clock.Now().UnixNano()
	n := len(tx.pubs)
	if tx.batch {
		n = 0
		for _, err := range tx.errs {
			if err == nil {
				n++
			}
		}
	}
	first, err := b.allocIDs(n)
	if err != nil {
		tx.releaseAcks(len(tx.acks))
		return err
	}
	defer func() {
		if err != nil {
			for _, p := range sc.places {
				p.q.mu.Lock()
				p.q.unplaceLocked([]*qentry{p.e})
				p.q.mu.Unlock()
			}
			sc.places = sc.places[:0]
			tx.releaseAcks(len(tx.acks))
		}
	}()
	id := first
	for i, m := range tx.pubs {
		if tx.batch && tx.errs[i] != nil {
			continue
		}
		m.ID = id
		id++
		m.PublishedAt = now
		if err := tx.reserveOne(sc, m, now, effs); err != nil {
			if !tx.batch {
				return err
			}
			tx.errs[i] = err
		}
	}
	return nil
}

// reserveOne routes m and reserves it in every target queue, adding its
// writes to the batch. On error it leaves nothing of m behind.
func (tx *Txn) reserveOne(sc *scratch, m *Message, now int64, effs *[]queueEffects) error {
	b := tx.b
	places, subs := len(sc.places), len(sc.subs)
	qs, err := tx.route(sc, m)
	if err != nil {
		return err
	}
	for _, q := range qs {
		e := &qentry{Entry: Entry{Seq: m.ID, MsgID: m.ID, ExpiresAt: m.ExpiresAt, Msg: m}, idx: Ready, size: m.Size()}
		if m.NotBefore > now {
			e.idx, e.Key = Scheduled, Key{Hi: uint64(m.NotBefore), Lo: m.ID}
		} else {
			e.Key = Key{Lo: m.ID}
		}
		q.mu.Lock()
		if ttl := q.policy.TTL; ttl > 0 && (e.ExpiresAt == 0 || now+int64(ttl) < e.ExpiresAt) {
			e.ExpiresAt = now + int64(ttl)
		}
		var fx effects
		err := q.reserveLocked(e, &fx)
		q.mu.Unlock()
		if !fx.empty() {
			*effs = append(*effs, queueEffects{q, fx})
		}
		if err != nil && !m.ToQueue && errors.Is(err, ErrNoQueue) {
			// A bound queue deleted since routing: the message was routed
			// before the delete took effect, and routing it again now would
			// not reach that queue either. Skip it, as if routed a moment
			// later; the publisher did nothing wrong.
			continue
		}
		if err != nil {
			for _, p := range sc.places[places:] {
				p.q.mu.Lock()
				p.q.unplaceLocked([]*qentry{p.e})
				p.q.mu.Unlock()
			}
			clear(sc.places[places:])
			sc.places = sc.places[:places]
			clear(sc.subs[subs:])
			sc.subs = sc.subs[:subs]
			return err
		}
		sc.places = append(sc.places, placement{q, e})
	}
	durable := 0
	for _, p := range sc.places[places:] {
		if p.q.durable {
			durable++
		}
	}
	shared := durable > 1
	if shared {
		sc.batch.PutBody(m)
		sc.batch.PutRef(m.ID, uint32(durable))
		b.refMu.Lock()
		b.refs[m.ID] = uint32(durable)
		b.refMu.Unlock()
	}
	for _, p := range sc.places[places:] {
		if !p.q.durable {
			continue
		}
		p.e.Shared = shared
		sc.batch.PutEntry(p.q.name, p.e.idx, p.e.Entry)
		sc.batch.AddCounts(p.q.name, 1, p.e.size)
		if m.QoS > 0 {
			tx.Sync = true
		}
	}
	return nil
}

// route finds the queues a message goes to and records its topic
// subscribers in sc.subs. A queue bound by several matching filters, like a
// subscription with several matching filters, gets the message once.
func (tx *Txn) route(sc *scratch, m *Message) ([]*Queue, error) {
	b := tx.b
	sc.queues = sc.queues[:0]
	if m.ToQueue {
		q, err := b.declare(m.Topic, QueueOptions{}, true, false)
		if err != nil {
			return nil, err
		}
		sc.queues = append(sc.queues, q)
		return sc.queues, nil
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	sc.routes = b.routes.match(m.Topic, sc.routes[:0])
	seen := false
next:
	for _, r := range sc.routes {
		if r.sub != nil {
			// A subscription with several filters is matched once per
			// matching filter. route.multi is guarded by b.mu, held here.
			if r.multi {
				if !seen {
					sc.seen.reset(len(sc.routes))
					seen = true
				}
				if !sc.seen.add(r.sub) {
					continue
				}
			}
			sc.subs = append(sc.subs, subDelivery{r.sub, m})
			continue
		}
		for _, q := range sc.queues {
			if q == r.queue {
				continue next
			}
		}
		sc.queues = append(sc.queues, r.queue)
	}
	return sc.queues, nil
}

// subSet is a set of subscriptions for one message's routing: open
// addressing on TopicSub.id, reused across commits so that routing does
// not allocate.
type subSet struct {
	slots []*TopicSub
	shift uint
}

// reset empties the set and sizes it for up to n members.
func (s *subSet) reset(n int) {
	size, shift := 16, uint(64-4)
	for size < 2*n {
		size, shift = size*2, shift-1
	}
	if cap(s.slots) < size {
		s.slots = make([]*TopicSub, size)
	} else {
		s.slots = s.slots[:size]
		clear(s.slots)
	}
	s.shift = shift
}

// add adds t and reports whether it was not there yet.
func (s *subSet) add(t *TopicSub) bool {
	mask := uint64(len(s.slots) - 1)
	for i := (t.id * 0x9e3779b97f4a7c15) >> s.shift; ; i = (i + 1) & mask {
		switch s.slots[i] {
		case nil:
			s.slots[i] = t
			return true
		case t:
			return false
		}
	}
}

// reserveLocked admits e into q under its limits, making room by the
// queue's overflow policy, and marks its key pending.
func (q *Queue) reserveLocked(e *qentry, fx *effects) error {
	if q.deleted {
		return fmt.Errorf("%w: %q", ErrNoQueue, q.name)
	}
	p := q.policy
	if e.size > p.MaxBytes {
		return fmt.Errorf("%w: %q: a message of %d bytes exceeds max_bytes %d", ErrQueueFull, q.name, e.size, p.MaxBytes)
	}
	for (p.MaxLength > 0 && q.count+1 > p.MaxLength) || q.bytes+e.size > p.MaxBytes {
		if p.Overflow == OverflowRejectPublish {
			return fmt.Errorf("%w: %q holds %d messages, %d bytes (max_length %d, max_bytes %d)",
				ErrQueueFull, q.name, q.count, q.bytes, p.MaxLength, p.MaxBytes)
		}
		v := q.takeOldestLocked()
		if v == nil {
			return fmt.Errorf("%w: %q: every message is unacked or scheduled", ErrQueueFull, q.name)
		}
		if p.Overflow == OverflowDropHead {
			q.stats.Dropped++
			q.leaveLocked(v, &fx.batch)
		} else {
			q.deadLocked(v, DeathOverflow, fx)
		}
	}
	q.count++
	q.bytes += e.size
	q.win(e.idx).pending[e.Key] = struct{}{}
	return nil
}

// takeOldestLocked removes the oldest ready entry (returned or in the ready
// window), or returns nil.
func (q *Queue) takeOldestLocked() *qentry {
	if err := q.refillLocked(&q.ready, Ready); err != nil {
		q.b.storeError(err)
	}
	r := q.ready.peek()
	if len(q.returned) > 0 && (r == nil || q.returned[0].Seq < r.Seq) {
		return q.returned.pop()
	}
	if r == nil {
		return nil
	}
	return q.ready.pop()
}

// apply writes the batch and then makes everything visible: entries placed
// and dispatched, acks settled, topic subscribers served.
func (tx *Txn) apply(sc *scratch) error {
	b := tx.b
	for _, a := range tx.acks {
		q := a.c.q
		if !q.durable {
			continue
		}
		q.mu.Lock()
		sc.batch.DeleteEntry(q.name, a.e.idx, a.e.Key)
		sc.batch.AddCounts(q.name, -1, -a.e.size)
		if a.e.Shared {
			b.releaseRef(a.e.MsgID, &sc.batch)
		}
		q.mu.Unlock()
		tx.Sync = true
	}
	for _, op := range tx.kv {
		sc.batch.addKV(op)
	}
	if sc.batch.Len() > 0 {
		if err := b.store.Apply(&sc.batch, tx.Sync); err != nil {
			for _, p := range sc.places {
				p.q.mu.Lock()
				p.q.unplaceLocked([]*qentry{p.e})
				p.q.mu.Unlock()
			}
			tx.releaseAcks(len(tx.acks))
			return err
		}
	}
	for i := 0; i < len(sc.places); {
		q := sc.places[i].q
		var fx effects
		q.mu.Lock()
		for ; i < len(sc.places) && sc.places[i].q == q; i++ {
			e := sc.places[i].e
			if q.deleted {
				// The queue was deleted while this commit was under way and
				// the delete may have been applied first: remove the entry
				// rather than leave it orphaned on disk.
				if q.durable {
					fx.batch.DeleteEntry(q.name, e.idx, e.Key)
					if e.Shared {
						b.releaseRef(e.MsgID, &fx.batch)
					}
				}
				continue
			}
			q.stats.Published++
			q.placeLocked([]*qentry{e})
		}
		q.dispatchLocked(&fx)
		if err := q.unlockAndRun(&fx); err != nil {
			b.storeError(err)
		}
	}
	for _, a := range tx.acks {
		q := a.c.q
		var fx effects
		q.mu.Lock()
		delete(q.unacked, a.e.Seq)
		if a.e.consumer != nil {
			a.e.consumer.unacked--
		}
		a.e.consumer = nil
		q.stats.Acked++
		q.count--
		q.bytes -= a.e.size
		q.dispatchLocked(&fx)
		if err := q.unlockAndRun(&fx); err != nil {
			b.storeError(err)
		}
	}
	for _, s := range sc.subs {
		s.s.sink.Deliver(Delivery{Msg: s.m, Count: 1})
	}
	return nil
}
