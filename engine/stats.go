package engine

// Figures for operators: what the admin API lists and the metrics endpoint
// exports. They cost more than Queues (a store read for a queue whose
// backlog waits on disk), so the hot paths never call them.

// QueueFigures describes every queue as Queues does, sorted by name, with
// QueueInfo.Oldest filled in as well.
func (b *Broker) QueueFigures() []QueueInfo {
	if !b.enter() {
		return nil
	}
	defer b.leave()
	return b.describeQueues((*Queue).figures)
}

// QueueFigure is QueueFigures for one queue.
func (b *Broker) QueueFigure(name string) (QueueInfo, error) {
	if !b.enter() {
		return QueueInfo{}, ErrClosed
	}
	defer b.leave()
	q, err := b.queue(name)
	if err != nil {
		return QueueInfo{}, err
	}
	return q.figures(), nil
}

func (q *Queue) figures() QueueInfo {
	q.mu.Lock()
	defer q.mu.Unlock()
	info := q.infoLocked()
	info.Oldest = q.oldestLocked()
	return info
}

// oldestLocked returns the earliest PublishedAt among the messages the
// queue holds in memory (returned, unacked, scheduled) and the head of its
// ready index, read from the store when the ready window is empty; 0 when
// the queue is empty. Ready messages behind the head are newer than it,
// except in a queue fed by moves (a dead-letter queue takes messages in
// the order they died, each keeping its first publish time), where the
// head is the one that died first.
func (q *Queue) oldestLocked() int64 {
	var oldest int64
	consider := func(m *Message) {
		if m != nil && m.PublishedAt > 0 && (oldest == 0 || m.PublishedAt < oldest) {
			oldest = m.PublishedAt
		}
	}
	for _, e := range q.returned {
		consider(e.Msg)
	}
	for _, e := range q.unacked {
		consider(e.Msg)
	}
	for _, w := range []*window{&q.ready, &q.sched} {
		if e := w.peek(); e != nil {
			if w == &q.sched {
				// Ordered by due time, not age: look at them all (the
				// window is bounded by queues.window_size).
				w.each(func(e *qentry) bool { consider(e.Msg); return true })
			} else {
				consider(e.Msg)
			}
			continue
		}
		if !w.more || !q.durable {
			continue
		}
		idx := Ready
		if w == &q.sched {
			idx = Scheduled
		}
		err := q.b.store.Scan(q.name, idx, w.loaded, 1, func(se Entry) error {
			consider(se.Msg)
			return nil
		})
		if err != nil {
			q.b.storeError(err)
		}
	}
	return oldest
}
