package engine

import (
	"fmt"
	"sync"
)

// Txn is a set of publishes and acks that apply atomically on Commit (one
// store batch) or not at all. It is not safe for concurrent use.
type Txn struct {
	b    *Broker
	pubs []*Message
	acks []txnAck
	// Sync makes Commit wait for stable storage even when nothing in the
	// transaction would require it (acks only, QoS 0 messages).
	Sync bool
	done bool
}

type txnAck struct {
	c   *Consumer
	tag uint64
	e   *qentry
}

// Begin starts a transaction.
func (b *Broker) Begin() *Txn { return &Txn{b: b} }

// Publish adds a publish to the transaction. The engine sets m.ID and
// m.PublishedAt on commit; m must not be changed afterwards.
func (tx *Txn) Publish(m *Message) error {
	if tx.done {
		return ErrTxnDone
	}
	if m.ToQueue {
		if err := ValidateQueueName(m.Topic); err != nil {
			return err
		}
	} else if err := ValidateTopic(m.Topic); err != nil {
		return err
	}
	tx.pubs = append(tx.pubs, m)
	return nil
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
	tx.done = true
	tx.pubs, tx.acks = nil, nil
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
	batch  Batch
}

type subDelivery struct {
	s *TopicSub
	m *Message
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// Commit applies the transaction.
func (tx *Txn) Commit() error {
	if tx.done {
		return ErrTxnDone
	}
	tx.done = true
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
	first, err := b.allocIDs(len(tx.pubs))
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
	for i, m := range tx.pubs {
		m.ID = first + uint64(i)
		m.PublishedAt = now
		qs, err := tx.route(sc, m)
		if err != nil {
			return err
		}
		durable := 0
		for _, q := range qs {
			if q.durable {
				durable++
			}
		}
		shared := durable > 1
		if shared {
			sc.batch.PutBody(m)
			sc.batch.PutRef(m.ID, uint32(durable))
		}
		for _, q := range qs {
			e := &qentry{Entry: Entry{Seq: m.ID, MsgID: m.ID, ExpiresAt: m.ExpiresAt, Msg: m}, idx: Ready, size: m.Size()}
			e.Shared = shared && q.durable
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
			if err != nil {
				return err
			}
			sc.places = append(sc.places, placement{q, e})
			if q.durable {
				sc.batch.PutEntry(q.name, e.idx, e.Entry)
				sc.batch.AddCounts(q.name, 1, e.size)
				if m.QoS > 0 {
					tx.Sync = true
				}
			}
		}
		if shared {
			b.refMu.Lock()
			b.refs[m.ID] = uint32(durable)
			b.refMu.Unlock()
		}
	}
	return nil
}

// route finds the queues a message goes to and records its topic
// subscribers in sc.subs.
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
	sc.routes = b.routes.match(m.Topic, sc.routes[:0])
	b.mu.RUnlock()
next:
	for _, r := range sc.routes {
		if r.sub != nil {
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
			q.stats.Published++
			q.placeLocked([]*qentry{sc.places[i].e})
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
