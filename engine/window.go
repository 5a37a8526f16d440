package engine

import "sort"

// qentry is a queue entry held in memory: in a window, unacked by a
// consumer, returned for redelivery, or on its way out.
type qentry struct {
	Entry
	idx  Index
	size int64
	// consumer holds the entry while it is unacked.
	consumer *Consumer
	// acking is set while a transaction that acks the entry commits.
	acking bool
}

// window is the in-memory part of one of a queue's indexes: the lowest keys
// not yet delivered, in key order. Everything the store holds beyond loaded
// waits on disk and is read in when the window runs low, so memory does not
// grow with backlog depth.
//
// Keys are reserved (pending) before their batch is applied and inserted when
// it has been. The invariant: every committed key <= loaded that has not left
// the queue is in memory; committed keys > loaded are on disk only, and more
// is true while there may be any.
type window struct {
	items   []*qentry // sorted by Key; items[head:] are live
	head    int
	bytes   int64
	loaded  Key
	more    bool
	pending map[Key]struct{}
}

func newWindow() window { return window{pending: make(map[Key]struct{})} }

func (w *window) len() int { return len(w.items) - w.head }

func (w *window) peek() *qentry {
	if w.head == len(w.items) {
		return nil
	}
	return w.items[w.head]
}

func (w *window) pop() *qentry {
	e := w.items[w.head]
	w.items[w.head] = nil
	w.head++
	w.bytes -= e.size
	if w.head == len(w.items) {
		w.items, w.head = w.items[:0], 0
	} else if w.head > 1024 && w.head > len(w.items)/2 {
		n := copy(w.items, w.items[w.head:])
		clear(w.items[n:])
		w.items, w.head = w.items[:n], 0
	}
	return e
}

// insert adds e in key order. Inserts are nearly always appends.
func (w *window) insert(e *qentry) {
	w.bytes += e.size
	live := w.items[w.head:]
	if len(live) == 0 || live[len(live)-1].Key.Less(e.Key) {
		w.items = append(w.items, e)
		return
	}
	i := w.head + sort.Search(len(live), func(i int) bool { return e.Key.Less(live[i].Key) })
	w.items = append(w.items, nil)
	copy(w.items[i+1:], w.items[i:])
	w.items[i] = e
}

// remove takes e out wherever it sits and reports whether it was there.
func (w *window) remove(e *qentry) bool {
	live := w.items[w.head:]
	i := sort.Search(len(live), func(i int) bool { return !live[i].Key.Less(e.Key) })
	if i == len(live) || live[i] != e {
		return false
	}
	if i == 0 {
		w.pop()
		return true
	}
	w.bytes -= e.size
	copy(w.items[w.head+i:], w.items[w.head+i+1:])
	w.items[len(w.items)-1] = nil
	w.items = w.items[:len(w.items)-1]
	return true
}

// committed places an entry whose put has been applied. It returns false
// when the entry stays on disk only (the window is full or the disk already
// holds keys before it that memory does not).
func (w *window) committed(e *qentry, room bool) bool {
	delete(w.pending, e.Key)
	if !w.loaded.Less(e.Key) {
		w.insert(e)
		return true
	}
	if !w.more && room {
		w.loaded = e.Key
		w.insert(e)
		return true
	}
	w.more = true
	return false
}

// each calls fn for each live entry in key order until fn returns false.
func (w *window) each(fn func(*qentry) bool) {
	for _, e := range w.items[w.head:] {
		if !fn(e) {
			return
		}
	}
}

// returnedList holds entries returned without delay, redelivered before the
// windows, in seq order.
type returnedList []*qentry

func (l *returnedList) push(e *qentry) {
	s := *l
	i := sort.Search(len(s), func(i int) bool { return e.Seq < s[i].Seq })
	s = append(s, nil)
	copy(s[i+1:], s[i:])
	s[i] = e
	*l = s
}

func (l *returnedList) pop() *qentry {
	s := *l
	e := s[0]
	s[0] = nil
	*l = s[1:]
	if len(*l) == 0 {
		*l = nil
	}
	return e
}
