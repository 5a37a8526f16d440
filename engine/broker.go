package engine

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// idLease is how many IDs the broker reserves with one synced write.
const idLease = 1 << 20

// MaxQueueNameLength bounds queue names.
const MaxQueueNameLength = 1024

// Broker routes messages between topics, queues and subscribers, and keeps
// queue state in a Store.
//
// Lock order (A -> B: B may be taken while A is held, never the reverse):
//
//	Broker.mu -> Queue.mu -> Broker.refMu
//	Queue.mu  -> Broker.randMu
//	Broker.idMu (alone; it is held across the synced write of a new lease)
//
// Broker.mu also guards the topic trie's routes and every TopicSub's
// filters; routing reads them under its read lock and takes no other lock
// while holding it.
type Broker struct {
	store Store
	cfg   Config
	clock Clock

	mu       sync.RWMutex
	queues   map[string]*Queue
	routes   trie[*route]
	bindings map[Binding]*route
	closed   bool

	// queuesRefused counts queue creations refused by Config.MaxQueues.
	queuesRefused atomic.Uint64
	// diskAlarm, when set, refuses every publish (SetDiskAlarm);
	// diskRefused counts the refusals.
	diskAlarm   atomic.Pointer[error]
	diskRefused atomic.Uint64

	refMu sync.Mutex
	refs  map[uint64]uint32

	idMu    sync.Mutex
	nextID  uint64
	idLimit uint64

	randMu sync.Mutex

	subIDs atomic.Uint64 // last TopicSub id handed out

	ops      sync.WaitGroup // operations under way, waited for by Close
	storeErr atomic.Pointer[error]
}

// queueMeta is what the store keeps of a queue's definition.
type queueMeta struct {
	Version int    `json:"v"`
	Policy  Policy `json:"policy"`
}

// Open starts a broker on store, recovering every durable queue, binding
// and reference count from it. The caller closes the store after Close.
func Open(store Store, cfg Config) (*Broker, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	st, err := store.Load()
	if err != nil {
		return nil, fmt.Errorf("engine: loading state: %w", err)
	}
	b := &Broker{
		store:    store,
		cfg:      cfg,
		clock:    cfg.Clock,
		queues:   make(map[string]*Queue),
		bindings: make(map[Binding]*route),
		refs:     st.Refs,
		nextID:   max(st.IDFloor, 1),
	}
	if b.refs == nil {
		b.refs = make(map[uint64]uint32)
	}
	b.idLimit = b.nextID
	for _, qs := range st.Queues {
		var m queueMeta
		if err := json.Unmarshal(qs.Meta, &m); err != nil {
			return nil, fmt.Errorf("%w: queue %q: %v", ErrCorrupt, qs.Name, err)
		}
		q := b.newQueue(qs.Name, QueueOptions{Policy: m.Policy})
		q.count, q.bytes = qs.Count, qs.Bytes
		q.ready.more, q.sched.more = true, true
		b.queues[qs.Name] = q
	}
	for _, bd := range st.Bindings {
		q := b.queues[bd.Queue]
		if q == nil {
			return nil, fmt.Errorf("%w: binding %q -> %q names no queue", ErrCorrupt, bd.Filter, bd.Queue)
		}
		r := &route{queue: q}
		b.routes.add(bd.Filter, r)
		b.bindings[bd] = r
	}
	for _, q := range b.queues {
		q.mu.Lock()
		// Read the head of the scheduled index now, so that its timer is
		// armed (delays and expiries) before any consumer arrives; the ready
		// window is read when first needed.
		if err := q.refillLocked(&q.sched, Scheduled); err != nil {
			q.mu.Unlock()
			return nil, err
		}
		var fx effects
		q.dispatchLocked(&fx)
		if err := q.unlockAndRun(&fx); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Close stops the broker: new operations fail with ErrClosed, timers stop,
// and Close waits for operations under way. It does not close the store.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	qs := make([]*Queue, 0, len(b.queues))
	for _, q := range b.queues {
		qs = append(qs, q)
	}
	b.mu.Unlock()
	b.ops.Wait()
	// Unacked messages will be redelivered after the restart: record the
	// attempts they had so their delivery counts come back exactly.
	var bt Batch
	for _, q := range qs {
		q.mu.Lock()
		if q.timer != nil {
			q.timer.Stop()
			q.timer = nil
		}
		if q.durable && !q.deleted {
			for _, e := range q.unacked {
				bt.PutEntry(q.name, e.idx, e.Entry)
			}
			for _, e := range q.returned {
				bt.PutEntry(q.name, e.idx, e.Entry)
			}
		}
		q.mu.Unlock()
	}
	if bt.Len() > 0 {
		if err := b.store.Apply(&bt, true); err != nil {
			b.storeError(err)
		}
	}
	if p := b.storeErr.Load(); p != nil {
		return *p
	}
	return nil
}

// enter registers an operation; it fails once Close began.
func (b *Broker) enter() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return false
	}
	b.ops.Add(1)
	return true
}

func (b *Broker) leave() { b.ops.Done() }

// storeError records an error from a path with no caller to return it to
// (timers, refills during dispatch). Close returns the first one.
func (b *Broker) storeError(err error) {
	b.storeErr.CompareAndSwap(nil, &err)
}

// Err returns the first background store error, or nil.
func (b *Broker) Err() error {
	if p := b.storeErr.Load(); p != nil {
		return *p
	}
	return nil
}

// backoff is Policy.RedeliveryBackoff with the broker's shared source.
func (b *Broker) backoff(p Policy, attempts uint32) (d int64) {
	b.randMu.Lock()
	defer b.randMu.Unlock()
	return int64(p.RedeliveryBackoff(attempts, b.cfg.Rand))
}

// allocIDs hands out n consecutive IDs, extending the lease with a synced
// write when it runs out, so no ID is ever reused after a crash.
func (b *Broker) allocIDs(n int) (uint64, error) {
	b.idMu.Lock()
	defer b.idMu.Unlock()
	first := b.nextID
	if first+uint64(n) > b.idLimit {
		limit := first + uint64(n) + idLease
		var bt Batch
		bt.SetIDFloor(limit)
		if err := b.store.Apply(&bt, true); err != nil {
			return 0, err
		}
		b.idLimit = limit
	}
	b.nextID += uint64(n)
	return first, nil
}

// releaseRef drops one reference to a shared body, deleting it with the
// last one.
func (b *Broker) releaseRef(id uint64, bt *Batch) {
	b.refMu.Lock()
	defer b.refMu.Unlock()
	n := b.refs[id]
	if n <= 1 {
		delete(b.refs, id)
		bt.DeleteBody(id)
		bt.DeleteRef(id)
		return
	}
	b.refs[id] = n - 1
	bt.PutRef(id, n-1)
}

// ValidateQueueName checks a queue name.
func ValidateQueueName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrInvalidQueue)
	}
	if len(name) > MaxQueueNameLength {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidQueue, MaxQueueNameLength)
	}
	if strings.IndexByte(name, 0) >= 0 {
		return fmt.Errorf("%w: NUL not allowed", ErrInvalidQueue)
	}
	return nil
}

// QueueOptions describe a queue when it is declared.
type QueueOptions struct {
	// Temporary queues live in memory only and are never written to the
	// store (STOMP /temp-queue, MQTT response topics).
	Temporary bool
	// Policy overrides the configured policy for this queue; zero fields
	// keep the configured values.
	Policy Policy
}

func (b *Broker) newQueue(name string, opts QueueOptions) *Queue {
	q := &Queue{
		b:        b,
		name:     name,
		durable:  !opts.Temporary,
		opts:     opts,
		ready:    newWindow(),
		sched:    newWindow(),
		unacked:  make(map[uint64]*qentry),
		windowSz: b.cfg.WindowSize,
		windowB:  b.cfg.WindowBytes,
	}
	q.policy = b.cfg.policyFor(name, opts.Policy)
	return q
}

// DeclareQueue creates the queue if it does not exist. Declaring an
// existing queue with the other durability fails with ErrQueueExists; a
// non-zero opts.Policy replaces the queue's override.
func (b *Broker) DeclareQueue(name string, opts QueueOptions) error {
	if !b.enter() {
		return ErrClosed
	}
	defer b.leave()
	_, err := b.declare(name, opts, true, true)
	return err
}

// declare returns the named queue, creating it when create is set.
// With strict, an existing queue of the other durability is an error;
// publishers and consumers use whatever queue is there.
func (b *Broker) declare(name string, opts QueueOptions, create, strict bool) (*Queue, error) {
	if err := ValidateQueueName(name); err != nil {
		return nil, err
	}
	policy := b.cfg.policyFor(name, opts.Policy)
	if err := policy.Validate(); err != nil {
		return nil, err
	}
	b.mu.RLock()
	q := b.queues[name]
	b.mu.RUnlock()
	if q != nil {
		if !strict {
			return q, nil
		}
		if q.durable == opts.Temporary {
			return nil, fmt.Errorf("%w: %q", ErrQueueExists, name)
		}
		if opts.Policy != (Policy{}) {
			return q, b.SetPolicy(name, opts.Policy)
		}
		return q, nil
	}
	if !create {
		return nil, fmt.Errorf("%w: %q", ErrNoQueue, name)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if q := b.queues[name]; q != nil {
		return q, nil
	}
	if len(b.queues) >= b.cfg.MaxQueues {
		b.queuesRefused.Add(1)
		return nil, fmt.Errorf("%w (limit %d): %q", ErrTooManyQueues, b.cfg.MaxQueues, name)
	}
	q = b.newQueue(name, opts)
	if q.durable {
		if err := b.putQueueMeta(q); err != nil {
			return nil, err
		}
	}
	b.queues[name] = q
	return q, nil
}

// SetDiskAlarm refuses every publish with err (wrapping ErrDiskFull) while
// free disk space is under the limit, or lets publishes through again with
// nil. Acks, consumption and purges go on: they free space. Nothing
// already confirmed is dropped.
func (b *Broker) SetDiskAlarm(err error) {
	if err == nil {
		b.diskAlarm.Store(nil)
		return
	}
	b.diskAlarm.Store(&err)
}

// DiskRefused reports how many publishes the disk alarm refused.
func (b *Broker) DiskRefused() uint64 { return b.diskRefused.Load() }

// diskAlarmErr is the refusal of a publish while the disk alarm is on.
func (b *Broker) diskAlarmErr() error {
	if p := b.diskAlarm.Load(); p != nil {
		b.diskRefused.Add(1)
		return *p
	}
	return nil
}

// QueuesRefused reports how many queue creations Config.MaxQueues
// refused.
func (b *Broker) QueuesRefused() uint64 { return b.queuesRefused.Load() }

func (b *Broker) putQueueMeta(q *Queue) error {
	meta, err := json.Marshal(queueMeta{Version: 1, Policy: q.opts.Policy})
	if err != nil {
		return err
	}
	var bt Batch
	bt.PutQueue(q.name, meta)
	return b.store.Apply(&bt, true)
}

// SetPolicy replaces a queue's policy override; it applies at once.
func (b *Broker) SetPolicy(name string, p Policy) error {
	q, err := b.queue(name)
	if err != nil {
		return err
	}
	resolved := b.cfg.policyFor(name, p)
	if err := resolved.Validate(); err != nil {
		return err
	}
	q.mu.Lock()
	q.opts.Policy = p
	q.policy = resolved
	if q.durable {
		if err := b.putQueueMeta(q); err != nil {
			q.mu.Unlock()
			return err
		}
	}
	var fx effects
	q.dispatchLocked(&fx)
	return q.unlockAndRun(&fx)
}

func (b *Broker) queue(name string) (*Queue, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return nil, ErrClosed
	}
	q := b.queues[name]
	if q == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoQueue, name)
	}
	return q, nil
}

// Bind routes messages published to topics matching filter into queue.
func (b *Broker) Bind(filter, queue string) error {
	if err := ValidateFilter(filter); err != nil {
		return err
	}
	q, err := b.queue(queue)
	if err != nil {
		return err
	}
	bd := Binding{Filter: filter, Queue: queue}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.bindings[bd]; ok {
		return nil
	}
	if q.durable {
		var bt Batch
		bt.PutBinding(filter, queue)
		if err := b.store.Apply(&bt, true); err != nil {
			return err
		}
	}
	r := &route{queue: q}
	b.routes.add(filter, r)
	b.bindings[bd] = r
	return nil
}

// Unbind removes a binding.
func (b *Broker) Unbind(filter, queue string) error {
	bd := Binding{Filter: filter, Queue: queue}
	b.mu.Lock()
	defer b.mu.Unlock()
	r, ok := b.bindings[bd]
	if !ok {
		return nil
	}
	if r.queue.durable {
		var bt Batch
		bt.DeleteBinding(filter, queue)
		if err := b.store.Apply(&bt, true); err != nil {
			return err
		}
	}
	b.routes.remove(filter, r)
	delete(b.bindings, bd)
	return nil
}

// Bindings lists every binding, sorted.
func (b *Broker) Bindings() []Binding {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]Binding, 0, len(b.bindings))
	for bd := range b.bindings {
		out = append(out, bd)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Filter != out[j].Filter {
			return out[i].Filter < out[j].Filter
		}
		return out[i].Queue < out[j].Queue
	})
	return out
}

// DurableSubscription makes queue a durable subscription to filter: the
// queue is declared if needed and bound to filter alone. A subscription
// whose filter changed is re-bound (its backlog is kept).
func (b *Broker) DurableSubscription(queue, filter string, opts QueueOptions) error {
	if err := ValidateFilter(filter); err != nil {
		return err
	}
	if err := b.DeclareQueue(queue, opts); err != nil {
		return err
	}
	for _, bd := range b.Bindings() {
		if bd.Queue == queue && bd.Filter != filter {
			if err := b.Unbind(bd.Filter, queue); err != nil {
				return err
			}
		}
	}
	return b.Bind(filter, queue)
}

// Consume attaches a consumer to queue, declaring the queue if needed.
func (b *Broker) Consume(queue string, sink Sink, opts ConsumeOptions) (*Consumer, error) {
	if !b.enter() {
		return nil, ErrClosed
	}
	defer b.leave()
	q, err := b.declare(queue, QueueOptions{}, true, false)
	if err != nil {
		return nil, err
	}
	c := &Consumer{q: q, sink: sink, autoAck: opts.AutoAck, credit: clampCredit(opts.Credit)}
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrNoQueue, queue)
	}
	q.consumers = append(q.consumers, c)
	var fx effects
	q.dispatchLocked(&fx)
	return c, q.unlockAndRun(&fx)
}

// Queues describes every queue, sorted by name.
func (b *Broker) Queues() []QueueInfo { return b.describeQueues((*Queue).info) }

// describeQueues describes every queue with describe, sorted by name. The
// broker lock is held only to list them.
func (b *Broker) describeQueues(describe func(*Queue) QueueInfo) []QueueInfo {
	b.mu.RLock()
	qs := make([]*Queue, 0, len(b.queues))
	for _, q := range b.queues {
		qs = append(qs, q)
	}
	b.mu.RUnlock()
	out := make([]QueueInfo, 0, len(qs))
	for _, q := range qs {
		out = append(out, describe(q))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// QueueInfo describes one queue.
func (b *Broker) QueueInfo(name string) (QueueInfo, error) {
	q, err := b.queue(name)
	if err != nil {
		return QueueInfo{}, err
	}
	return q.info(), nil
}

func (q *Queue) info() QueueInfo {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.infoLocked()
}

func (q *Queue) infoLocked() QueueInfo {
	return QueueInfo{
		Name: q.name, Durable: q.durable, Policy: q.policy, Override: q.opts.Policy,
		Messages: q.count, Bytes: q.bytes, Unacked: len(q.unacked),
		Consumers: len(q.consumers), Stats: q.stats,
	}
}

// runEffects carries out what a locked section of q left: it applies the
// batch, places the entries it reserved, and moves dead letters. What that
// in turn leaves goes to next.
func (b *Broker) runEffects(q *Queue, fx *effects, next *effects) error {
	if fx.batch.Len() > 0 {
		if err := b.store.Apply(&fx.batch, fx.sync); err != nil {
			q.mu.Lock()
			q.unplaceLocked(fx.placed)
			q.mu.Unlock()
			b.storeError(err)
			return err
		}
	}
	if len(fx.placed) > 0 {
		q.mu.Lock()
		q.placeLocked(fx.placed)
		q.dispatchLocked(next)
		q.mu.Unlock()
	}
	if len(fx.dead) > 0 {
		return b.moveDead(q, fx.dead)
	}
	return nil
}

// moveDead moves dead letters of src into its dead-letter queue, with the
// reason headers. A dead-letter queue takes them whatever its limits: they
// were admitted already, and dropping them would lose messages. With no
// dead-letter queue they are dropped.
func (b *Broker) moveDead(src *Queue, dead []deadLetter) error {
	src.mu.Lock()
	dlqName := src.policy.DeadLetterName(src.name)
	src.mu.Unlock()
	if dlqName == src.name {
		dlqName = ""
	}
	now := strconv.FormatInt(b.clock.Now().UnixMilli(), 10)
	es := make([]*qentry, len(dead))
	for i, d := range dead {
		es[i] = d.e
	}
	return b.moveEntries(src, es, dlqName, func(i int, m *Message) {
		m.Props = append(m.Props,
			Property{HeaderDeathReason, dead[i].reason},
			Property{HeaderOriginalDestination, src.name},
			Property{HeaderDeathTime, now})
		m.ExpiresAt = 0
	})
}

// moveEntries moves entries that have left src (counted out, in limbo)
// into the queue named dst, in one batch: removed from src, added to dst as
// new messages that rewrite may change. With dst "" they are only removed.
func (b *Broker) moveEntries(src *Queue, es []*qentry, dst string, rewrite func(i int, m *Message)) error {
	var bt Batch
	var dq *Queue
	var placed []*qentry
	if dst != "" {
		var err error
		dq, err = b.declare(dst, QueueOptions{Temporary: !src.durable}, true, false)
		if err != nil {
			return err
		}
		first, err := b.allocIDs(len(es))
		if err != nil {
			return err
		}
		for i, e := range es {
			m := e.Msg
			if m == nil {
				if m, err = b.loadMessage(src, e); err != nil {
					return err
				}
			}
			m = m.Clone()
			m.ID = first + uint64(i)
			m.NotBefore = 0
			// It now lives in dst: deliveries name dst as their destination
			// (a dead letter keeps where it came from in its headers).
			m.Topic, m.ToQueue = dst, true
			rewrite(i, m)
			ne := &qentry{Entry: Entry{Key: Key{Lo: m.ID}, Seq: m.ID, MsgID: m.ID, Msg: m}, idx: Ready, size: m.Size()}
			placed = append(placed, ne)
		}
		dq.mu.Lock()
		for _, e := range placed {
			dq.count++
			dq.bytes += e.size
			dq.ready.pending[e.Key] = struct{}{}
			if dq.durable {
				bt.PutEntry(dq.name, Ready, e.Entry)
				bt.AddCounts(dq.name, 1, e.size)
			}
		}
		dq.mu.Unlock()
	}
	src.mu.Lock()
	if src.durable {
		for _, e := range es {
			bt.DeleteEntry(src.name, e.idx, e.Key)
			bt.AddCounts(src.name, -1, -e.size)
			if e.Shared {
				b.releaseRef(e.MsgID, &bt)
			}
		}
	}
	src.mu.Unlock()
	err := b.store.Apply(&bt, false)
	src.mu.Lock()
	src.limbo -= len(es)
	src.mu.Unlock()
	if dq == nil {
		return err
	}
	dq.mu.Lock()
	if err != nil {
		dq.unplaceLocked(placed)
		dq.mu.Unlock()
		return err
	}
	dq.stats.Published += uint64(len(placed))
	dq.placeLocked(placed)
	var fx effects
	dq.dispatchLocked(&fx)
	return dq.unlockAndRun(&fx)
}

// loadMessage reads the message of an entry that waits on disk only.
func (b *Broker) loadMessage(q *Queue, e *qentry) (*Message, error) {
	var m *Message
	err := b.store.Scan(q.name, e.idx, Key{Hi: e.Key.Hi, Lo: e.Key.Lo - 1}, 1, func(se Entry) error {
		if se.Key == e.Key {
			m = se.Msg
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("%w: queue %q entry %d missing", ErrCorrupt, q.name, e.Seq)
	}
	return m, nil
}
