package engine

import "fmt"

// Operations for operators: browse, purge, replay, delete. They are rare,
// so unlike the hot paths some of them hold a queue's lock across a store
// write to keep the queue still while they work.

// Browse returns up to limit ready messages of queue in delivery order
// without consuming them (returned ones first, then the ready window, then
// what waits on disk). Unacked and scheduled messages are not listed.
func (b *Broker) Browse(queue string, limit int) ([]Entry, error) {
	q, err := b.queue(queue)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 100
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []Entry
	for _, e := range q.returned {
		if len(out) == limit {
			return out, nil
		}
		out = append(out, e.Entry)
	}
	q.ready.each(func(e *qentry) bool {
		if len(out) == limit {
			return false
		}
		out = append(out, e.Entry)
		return true
	})
	if len(out) < limit && q.ready.more && q.durable {
		err = b.store.Scan(q.name, Ready, q.ready.loaded, limit-len(out), func(se Entry) error {
			if _, ok := q.ready.pending[se.Key]; !ok {
				out = append(out, se)
			}
			return nil
		})
	}
	return out, err
}

// Purge removes every ready and scheduled message of queue; unacked ones
// stay. It returns how many were removed.
func (b *Broker) Purge(queue string) (int64, error) {
	q, err := b.queue(queue)
	if err != nil {
		return 0, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	var bt Batch
	var n, bytes int64
	take := func(e *qentry) {
		n++
		bytes += e.size
		if e.Shared {
			b.releaseRef(e.MsgID, &bt)
		}
	}
	for _, e := range q.returned {
		take(e)
	}
	q.returned = nil
	for _, w := range []*window{&q.ready, &q.sched} {
		for w.len() > 0 {
			take(w.pop())
		}
	}
	if q.durable {
		for _, idx := range []Index{Ready, Scheduled} {
			w := q.win(idx)
			if !w.more {
				continue
			}
			err := b.store.Scan(q.name, idx, w.loaded, 0, func(se Entry) error {
				if _, ok := w.pending[se.Key]; !ok {
					n++
					bytes += se.Msg.Size()
					if se.Shared {
						b.releaseRef(se.MsgID, &bt)
					}
				}
				return nil
			})
			if err != nil {
				return 0, err
			}
			w.more = false
		}
		bt.PurgeIndex(q.name, Ready)
		bt.PurgeIndex(q.name, Scheduled)
		for _, e := range q.unacked {
			bt.PutEntry(q.name, e.idx, e.Entry)
		}
		bt.AddCounts(q.name, -n, -bytes)
		if err := b.store.Apply(&bt, true); err != nil {
			return 0, fmt.Errorf("engine: purging %q: %w", q.name, err)
		}
	}
	q.count -= n
	q.bytes -= bytes
	q.stats.Dropped += uint64(n)
	return n, nil
}

// Replay moves up to limit messages from the head of a dead-letter queue
// back to the queues they died in (their x-original-destination), with the
// death headers removed and a fresh delivery count. Messages without an
// origin stay. It returns how many moved.
func (b *Broker) Replay(dlq string, limit int) (int, error) {
	q, err := b.queue(dlq)
	if err != nil {
		return 0, err
	}
	if limit <= 0 {
		limit = 1 << 30
	}
	moved := 0
	for moved < limit {
		q.mu.Lock()
		var batch []*qentry
		var origin string
		for moved+len(batch) < limit && len(batch) < 256 {
			e := q.peekOldestLocked()
			if e == nil {
				break
			}
			o, _ := e.Msg.Prop(HeaderOriginalDestination)
			if o == "" || (origin != "" && o != origin) {
				break
			}
			origin = o
			q.takeOldestLocked()
			q.count--
			q.bytes -= e.size
			q.limbo++
			batch = append(batch, e)
		}
		q.mu.Unlock()
		if len(batch) == 0 {
			return moved, nil
		}
		err := b.moveEntries(q, batch, origin, func(_ int, m *Message) {
			kept := m.Props[:0]
			for _, p := range m.Props {
				switch p.Key {
				case HeaderDeathReason, HeaderOriginalDestination, HeaderDeathTime:
				default:
					kept = append(kept, p)
				}
			}
			m.Props = kept
		})
		if err != nil {
			return moved, err
		}
		moved += len(batch)
	}
	return moved, nil
}

// peekOldestLocked returns the entry takeOldestLocked would take.
func (q *Queue) peekOldestLocked() *qentry {
	if err := q.refillLocked(&q.ready, Ready); err != nil {
		q.b.storeError(err)
	}
	r := q.ready.peek()
	if len(q.returned) > 0 && (r == nil || q.returned[0].Seq < r.Seq) {
		return q.returned[0]
	}
	return r
}

// DeleteQueue removes a queue, its bindings and every message in it. Its
// consumers are detached and get nothing more.
func (b *Broker) DeleteQueue(name string) error {
	b.mu.Lock()
	q := b.queues[name]
	if q == nil {
		b.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNoQueue, name)
	}
	var bt Batch
	for bd, r := range b.bindings {
		if bd.Queue == name {
			b.routes.remove(bd.Filter, r)
			delete(b.bindings, bd)
			bt.DeleteBinding(bd.Filter, bd.Queue)
		}
	}
	delete(b.queues, name)
	q.mu.Lock()
	b.mu.Unlock()
	defer q.mu.Unlock()
	q.deleted = true
	if q.timer != nil {
		q.timer.Stop()
	}
	for _, c := range q.consumers {
		c.closed = true
	}
	q.consumers = nil
	if !q.durable {
		return nil
	}
	release := func(e Entry) {
		if e.Shared {
			b.releaseRef(e.MsgID, &bt)
		}
	}
	for _, e := range q.unacked {
		release(e.Entry)
	}
	for _, e := range q.returned {
		release(e.Entry)
	}
	for _, w := range []*window{&q.ready, &q.sched} {
		w.each(func(e *qentry) bool { release(e.Entry); return true })
	}
	for _, idx := range []Index{Ready, Scheduled} {
		w := q.win(idx)
		err := b.store.Scan(name, idx, w.loaded, 0, func(se Entry) error {
			if _, ok := w.pending[se.Key]; !ok {
				release(se)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	bt.DeleteQueue(name)
	return b.store.Apply(&bt, true)
}
