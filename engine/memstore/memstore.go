// Package memstore implements engine.Store in memory, for tests. Nothing
// survives the process. It passes the same suite (engine/storetest) as the
// Pebble store.
package memstore

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/tandem-mq/tandem/engine"
)

// ErrInvalidBatch is wrapped by the error of an Apply whose batch holds an
// operation that cannot be applied; nothing of the batch is applied.
var ErrInvalidBatch = errors.New("memstore: invalid batch")

// Store is an in-memory engine.Store. It is safe for concurrent use.
type Store struct {
	// mu guards every field below. Callbacks of Scan and ScanKV run without
	// it, on copies.
	mu       sync.RWMutex
	closed   bool
	queues   map[string]*queue
	bodies   map[uint64]*engine.Message
	refs     map[uint64]uint32
	bindings map[engine.Binding]struct{}
	idFloor  uint64
	kv       map[string]map[string][]byte
}

// queue is one queue's record, counts and indexes. A queue exists in the
// map while it has a record, counts or entries.
type queue struct {
	hasRecord    bool
	meta         []byte
	count, bytes int64
	ready, sched index
}

// index is a sorted set of entries.
type index struct {
	keys    []engine.Key // sorted
	entries map[engine.Key]engine.Entry
}

var _ engine.Store = (*Store)(nil)

// New returns an empty Store.
func New() *Store {
	return &Store{
		queues:   make(map[string]*queue),
		bodies:   make(map[uint64]*engine.Message),
		refs:     make(map[uint64]uint32),
		bindings: make(map[engine.Binding]struct{}),
		kv:       make(map[string]map[string][]byte),
	}
}

// cloneMessage deep-copies m: the caller may change anything of the result.
func cloneMessage(m *engine.Message) *engine.Message {
	if m == nil {
		return nil
	}
	c := m.Clone()
	c.Body = bytes.Clone(m.Body)
	return c
}

// Load implements engine.Store. Queues are sorted by name, bindings by
// filter then queue. Counts of a queue without a record are not reported.
func (s *Store) Load() (*engine.State, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, engine.ErrClosed
	}
	st := &engine.State{Refs: make(map[uint64]uint32, len(s.refs)), IDFloor: s.idFloor}
	for name, q := range s.queues {
		if q.hasRecord {
			st.Queues = append(st.Queues, engine.QueueState{
				Name: name, Meta: bytes.Clone(q.meta), Count: q.count, Bytes: q.bytes,
			})
		}
	}
	sort.Slice(st.Queues, func(i, j int) bool { return st.Queues[i].Name < st.Queues[j].Name })
	for b := range s.bindings {
		st.Bindings = append(st.Bindings, b)
	}
	sort.Slice(st.Bindings, func(i, j int) bool {
		a, b := st.Bindings[i], st.Bindings[j]
		if a.Filter != b.Filter {
			return a.Filter < b.Filter
		}
		return a.Queue < b.Queue
	})
	for id, n := range s.refs {
		st.Refs[id] = n
	}
	return st, nil
}

// Apply implements engine.Store. The batch is checked first and then applied
// under the lock, so it is all-or-nothing; sync has no meaning here.
func (s *Store) Apply(b *engine.Batch, sync bool) error {
	for i := range b.Ops {
		if why := b.Ops[i].Problem(); why != "" {
			return fmt.Errorf("%w: op %d (kind %d): %s", ErrInvalidBatch, i, b.Ops[i].Kind, why)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return engine.ErrClosed
	}
	for i := range b.Ops {
		s.applyLocked(&b.Ops[i])
	}
	return nil
}

func (s *Store) queueLocked(name string) *queue {
	q := s.queues[name]
	if q == nil {
		q = &queue{}
		s.queues[name] = q
	}
	return q
}

func (q *queue) index(idx engine.Index) *index {
	if idx == engine.Scheduled {
		return &q.sched
	}
	return &q.ready
}

func (s *Store) applyLocked(op *engine.Op) {
	switch op.Kind {
	case engine.OpPutQueue:
		q := s.queueLocked(op.Queue)
		q.hasRecord, q.meta = true, bytes.Clone(op.Meta)
	case engine.OpDeleteQueue:
		delete(s.queues, op.Queue)
	case engine.OpPutEntry:
		e := op.Entry
		if e.Shared {
			e.Msg = nil
		} else {
			e.Msg = cloneMessage(e.Msg)
		}
		s.queueLocked(op.Queue).index(op.Index).put(e)
	case engine.OpDeleteEntry:
		if q := s.queues[op.Queue]; q != nil {
			q.index(op.Index).delete(op.Key)
		}
	case engine.OpPurgeIndex:
		if q := s.queues[op.Queue]; q != nil {
			*q.index(op.Index) = index{}
		}
	case engine.OpTrimReady:
		if q := s.queues[op.Queue]; q != nil {
			q.ready.trimBelow(engine.Key{Lo: op.Key.Lo})
		}
	case engine.OpPutBody:
		s.bodies[op.Msg.ID] = cloneMessage(op.Msg)
	case engine.OpDeleteBody:
		delete(s.bodies, op.ID)
	case engine.OpPutRef:
		s.refs[op.ID] = uint32(op.N)
	case engine.OpDeleteRef:
		delete(s.refs, op.ID)
	case engine.OpAddCounts:
		q := s.queueLocked(op.Queue)
		q.count += op.N
		q.bytes += op.Bytes
	case engine.OpPutBinding:
		s.bindings[engine.Binding{Filter: op.Filter, Queue: op.Queue}] = struct{}{}
	case engine.OpDeleteBinding:
		delete(s.bindings, engine.Binding{Filter: op.Filter, Queue: op.Queue})
	case engine.OpSetIDFloor:
		s.idFloor = op.ID
	case engine.OpPutKV:
		ns := s.kv[op.NS]
		if ns == nil {
			ns = make(map[string][]byte)
			s.kv[op.NS] = ns
		}
		ns[op.KVKey] = bytes.Clone(op.Value)
	case engine.OpDeleteKV:
		delete(s.kv[op.NS], op.KVKey)
	}
}

func cmpKey(a, b engine.Key) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}

func (x *index) put(e engine.Entry) {
	if x.entries == nil {
		x.entries = make(map[engine.Key]engine.Entry)
	}
	if _, ok := x.entries[e.Key]; !ok {
		i, _ := slices.BinarySearchFunc(x.keys, e.Key, cmpKey)
		x.keys = slices.Insert(x.keys, i, e.Key)
	}
	x.entries[e.Key] = e
}

func (x *index) delete(k engine.Key) {
	if _, ok := x.entries[k]; !ok {
		return
	}
	delete(x.entries, k)
	i, _ := slices.BinarySearchFunc(x.keys, k, cmpKey)
	x.keys = slices.Delete(x.keys, i, i+1)
}

// trimBelow removes every entry whose key sorts before k.
func (x *index) trimBelow(k engine.Key) {
	n, _ := slices.BinarySearchFunc(x.keys, k, cmpKey)
	for _, key := range x.keys[:n] {
		delete(x.entries, key)
	}
	x.keys = slices.Delete(x.keys, 0, n)
}

// Scan implements engine.Store. fn runs without the lock, on copies.
func (s *Store) Scan(queue string, idx engine.Index, after engine.Key, limit int, fn func(engine.Entry) error) error {
	if idx != engine.Ready && idx != engine.Scheduled {
		return fmt.Errorf("memstore: scan: unknown index %d", idx)
	}
	out, err := s.collect(queue, idx, after, limit)
	if err != nil {
		return err
	}
	for _, e := range out {
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) collect(queue string, idx engine.Index, after engine.Key, limit int) ([]engine.Entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, engine.ErrClosed
	}
	q := s.queues[queue]
	if q == nil {
		return nil, nil
	}
	x := q.index(idx)
	i, found := slices.BinarySearchFunc(x.keys, after, cmpKey)
	if found {
		i++
	}
	keys := x.keys[i:]
	if limit > 0 && len(keys) > limit {
		keys = keys[:limit]
	}
	out := make([]engine.Entry, 0, len(keys))
	for _, k := range keys {
		e := x.entries[k]
		if e.Shared {
			m := s.bodies[e.MsgID]
			if m == nil {
				return nil, fmt.Errorf("%w: memstore: queue %q %s %v: shared body %d is missing",
					engine.ErrCorrupt, queue, idx, k, e.MsgID)
			}
			e.Msg = m
		}
		e.Msg = cloneMessage(e.Msg)
		out = append(out, e)
	}
	return out, nil
}

// ScanKV implements engine.Store. fn runs without the lock, on copies.
func (s *Store) ScanKV(ns string, fn func(key string, value []byte) error) error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return engine.ErrClosed
	}
	type kv struct {
		k string
		v []byte
	}
	var out []kv
	for k, v := range s.kv[ns] {
		out = append(out, kv{k, bytes.Clone(v)})
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b kv) int { return strings.Compare(a.k, b.k) })
	for _, p := range out {
		if err := fn(p.k, p.v); err != nil {
			return err
		}
	}
	return nil
}

// Close implements engine.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return engine.ErrClosed
	}
	s.closed = true
	return nil
}
