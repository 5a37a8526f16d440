package engine

import (
	"fmt"
	"math"
	"sync"
)

// This file defines what the engine needs from storage. persist implements
// it on Pebble; memstore implements it in memory for tests. Both run the one
// suite in engine/storetest.

// Index names one of a queue's two ordered indexes.
type Index uint8

const (
	// Ready holds messages in FIFO order. Its keys are {0, seq}.
	Ready Index = 1
	// Scheduled holds messages that may not be delivered before a time:
	// delayed publishes and NACKed messages waiting for redelivery. Its keys
	// are {due (Unix nanoseconds), seq}.
	Scheduled Index = 2
)

func (i Index) String() string {
	switch i {
	case Ready:
		return "ready"
	case Scheduled:
		return "scheduled"
	}
	return "index?"
}

// Key orders entries within an index: by Hi, then by Lo. Seq numbers and due
// times are never 0, so the zero Key sorts before every stored key.
type Key struct {
	Hi, Lo uint64
}

// Less reports whether k sorts before o.
func (k Key) Less(o Key) bool {
	if k.Hi != o.Hi {
		return k.Hi < o.Hi
	}
	return k.Lo < o.Lo
}

// Entry is one message's place in one queue.
type Entry struct {
	Key Key
	// Seq is the entry's sequence number: unique across the database and
	// increasing in publish order. It is the delivery tag.
	Seq uint64
	// MsgID identifies the message. Entries of one message in several
	// queues share it.
	MsgID uint64
	// Deliveries counts delivery attempts so far.
	Deliveries uint32
	// ExpiresAt is the entry's effective expiry (the earlier of the
	// message's and the queue's TTL), Unix nanoseconds, 0 for none.
	ExpiresAt int64
	// Shared is true when the message body is stored once for several
	// queues (Batch.PutBody) rather than inside the entry.
	Shared bool
	// Msg is the message. When writing a shared entry it is ignored (the
	// body is written once with PutBody); Store.Scan always fills it in.
	Msg *Message
}

// QueueState is a queue as recovered from the store.
type QueueState struct {
	Name string
	// Meta is the engine's own encoding of the queue's definition; the store
	// keeps it opaque.
	Meta []byte
	// Count and Bytes are the sums of every AddCounts applied for the queue.
	Count, Bytes int64
}

// Binding routes a topic filter into a queue.
type Binding struct {
	Filter string
	Queue  string
}

// State is everything the engine loads when it opens a store, except queue
// entries, which it reads in windows with Scan.
type State struct {
	Queues   []QueueState
	Bindings []Binding
	// Refs holds the remaining reference count of each shared body.
	Refs map[uint64]uint32
	// IDFloor is the last value given to SetIDFloor (0 for a new store).
	IDFloor uint64
}

// Store is durable broker state.
//
// Apply is safe for concurrent use; the other methods may run concurrently
// with Apply and each other. A Scan sees every batch whose Apply returned.
type Store interface {
	// Load reads the state needed to start the engine.
	Load() (*State, error)
	// Apply writes every operation of b atomically: after a crash either all
	// of them are there or none. With sync, Apply returns only once the
	// batch is on stable storage, and concurrent synced Applies share their
	// fsyncs (group commit). Without sync the batch may be lost in a crash,
	// but never applied out of order with later batches.
	Apply(b *Batch, sync bool) error
	// Scan calls fn for the entries of one index of queue whose keys sort
	// strictly after after, in key order, at most limit of them (limit <= 0
	// means no limit). Msg is filled in on every entry. An error from fn
	// stops the scan and is returned.
	Scan(queue string, idx Index, after Key, limit int, fn func(Entry) error) error
	// ScanKV calls fn for every key of namespace ns in key order.
	ScanKV(ns string, fn func(key string, value []byte) error) error
	// Close releases the store. Calls after Close return ErrClosed.
	Close() error
}

// OpKind says what one Op of a Batch does.
type OpKind uint8

const (
	OpPutQueue      OpKind = iota + 1 // Queue, Meta: create or replace a queue's record
	OpDeleteQueue                     // Queue: remove the record, its counts and every entry
	OpPutEntry                        // Queue, Index, Entry
	OpDeleteEntry                     // Queue, Index, Key
	OpPurgeIndex                      // Queue, Index: remove every entry of the index
	OpTrimReady                       // Queue, Key.Lo: remove every Ready entry with seq < Key.Lo
	OpPutBody                         // Msg: store a shared body under Msg.ID
	OpDeleteBody                      // ID
	OpPutRef                          // ID, N: set a shared body's reference count
	OpDeleteRef                       // ID
	OpAddCounts                       // Queue, N (count delta), Bytes (bytes delta)
	OpPutBinding                      // Filter, Queue
	OpDeleteBinding                   // Filter, Queue
	OpSetIDFloor                      // ID
	OpPutKV                           // NS, KVKey, Value
	OpDeleteKV                        // NS, KVKey
)

// Op is one operation of a Batch. Which fields count depends on Kind.
type Op struct {
	Kind   OpKind
	Queue  string
	Index  Index
	Key    Key
	Entry  Entry
	Msg    *Message
	ID     uint64
	N      int64
	Bytes  int64
	Filter string
	Meta   []byte
	NS     string
	KVKey  string
	Value  []byte
}

// Batch is an ordered list of operations that a Store applies atomically.
type Batch struct {
	Ops []Op
}

// Len returns the number of operations.
func (b *Batch) Len() int { return len(b.Ops) }

// Reset empties the batch for reuse.
func (b *Batch) Reset() { b.Ops = b.Ops[:0] }

func (b *Batch) add(op Op) {
	if b.Ops == nil {
		if p, ok := opsPool.Get().(*[]Op); ok {
			b.Ops = (*p)[:0]
		}
	}
	b.Ops = append(b.Ops, op)
}

// opsPool recycles the op slices of the engine's short-lived batches.
var opsPool sync.Pool

// recycle gives b's ops back for reuse by later batches and empties b.
func (b *Batch) recycle() {
	if cap(b.Ops) == 0 || cap(b.Ops) > 1<<14 {
		b.Ops = nil
		return
	}
	ops := b.Ops[:cap(b.Ops)]
	clear(ops)
	ops = ops[:0]
	b.Ops = nil
	opsPool.Put(&ops)
}

// PutQueue creates or replaces a queue's record.
func (b *Batch) PutQueue(queue string, meta []byte) {
	b.add(Op{Kind: OpPutQueue, Queue: queue, Meta: meta})
}

// DeleteQueue removes a queue's record, counts and entries.
func (b *Batch) DeleteQueue(queue string) { b.add(Op{Kind: OpDeleteQueue, Queue: queue}) }

// PutEntry writes e under e.Key in idx of queue.
func (b *Batch) PutEntry(queue string, idx Index, e Entry) {
	b.add(Op{Kind: OpPutEntry, Queue: queue, Index: idx, Key: e.Key, Entry: e})
}

// DeleteEntry removes the entry at k in idx of queue.
func (b *Batch) DeleteEntry(queue string, idx Index, k Key) {
	b.add(Op{Kind: OpDeleteEntry, Queue: queue, Index: idx, Key: k})
}

// PurgeIndex removes every entry of idx of queue.
func (b *Batch) PurgeIndex(queue string, idx Index) {
	b.add(Op{Kind: OpPurgeIndex, Queue: queue, Index: idx})
}

// TrimReady removes every Ready entry of queue with seq below seq. The
// engine uses it to drop the tombstones of acknowledged history in one range.
func (b *Batch) TrimReady(queue string, seq uint64) {
	b.add(Op{Kind: OpTrimReady, Queue: queue, Key: Key{Lo: seq}})
}

// PutBody stores a body shared by several queues under m.ID.
func (b *Batch) PutBody(m *Message) { b.add(Op{Kind: OpPutBody, Msg: m, ID: m.ID}) }

// DeleteBody removes a shared body.
func (b *Batch) DeleteBody(id uint64) { b.add(Op{Kind: OpDeleteBody, ID: id}) }

// PutRef sets the reference count of a shared body.
func (b *Batch) PutRef(id uint64, n uint32) { b.add(Op{Kind: OpPutRef, ID: id, N: int64(n)}) }

// DeleteRef removes the reference count of a shared body.
func (b *Batch) DeleteRef(id uint64) { b.add(Op{Kind: OpDeleteRef, ID: id}) }

// AddCounts adds to a queue's persisted message count and byte total.
func (b *Batch) AddCounts(queue string, count, bytes int64) {
	b.add(Op{Kind: OpAddCounts, Queue: queue, N: count, Bytes: bytes})
}

// PutBinding records that filter routes into queue.
func (b *Batch) PutBinding(filter, queue string) {
	b.add(Op{Kind: OpPutBinding, Filter: filter, Queue: queue})
}

// DeleteBinding removes a binding.
func (b *Batch) DeleteBinding(filter, queue string) {
	b.add(Op{Kind: OpDeleteBinding, Filter: filter, Queue: queue})
}

// SetIDFloor records that no ID or seq at or above floor has been handed out
// yet. The engine reserves IDs in blocks with it.
func (b *Batch) SetIDFloor(floor uint64) { b.add(Op{Kind: OpSetIDFloor, ID: floor}) }

// PutKV stores value under key in namespace ns (adapter state such as MQTT
// retained messages and sessions).
func (b *Batch) PutKV(ns, key string, value []byte) {
	b.add(Op{Kind: OpPutKV, NS: ns, KVKey: key, Value: value})
}

// DeleteKV removes key from namespace ns.
func (b *Batch) DeleteKV(ns, key string) { b.add(Op{Kind: OpDeleteKV, NS: ns, KVKey: key}) }

// Problem reports why a store cannot apply op, or "" if it can. Every
// Store refuses a batch holding an op with a problem, and writes none of it.
func (op *Op) Problem() string {
	switch op.Kind {
	case OpPutEntry, OpDeleteEntry, OpPurgeIndex:
		if op.Index != Ready && op.Index != Scheduled {
			return fmt.Sprintf("unknown index %d", op.Index)
		}
	}
	switch op.Kind {
	case OpPutQueue, OpDeleteQueue, OpPurgeIndex, OpTrimReady,
		OpDeleteBody, OpDeleteRef, OpAddCounts, OpPutBinding,
		OpDeleteBinding, OpSetIDFloor, OpPutKV, OpDeleteKV:
		return ""
	case OpPutEntry:
		if op.Index == Ready && op.Entry.Key.Hi != 0 {
			return "ready key with Hi != 0"
		}
		if !op.Entry.Shared && op.Entry.Msg == nil {
			return "unshared entry without a message"
		}
		return ""
	case OpDeleteEntry:
		if op.Index == Ready && op.Key.Hi != 0 {
			return "ready key with Hi != 0"
		}
		return ""
	case OpPutBody:
		if op.Msg == nil {
			return "body without a message"
		}
		if op.Msg.ID != op.ID {
			return "body ID differs from message ID"
		}
		return ""
	case OpPutRef:
		if op.N < 0 || op.N > math.MaxUint32 {
			return fmt.Sprintf("reference count %d out of range", op.N)
		}
		return ""
	}
	return "unknown op kind"
}
