package persist

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/tandem-mq/tandem/engine"
)

// Group commit. Pebble's commit pipeline already lets concurrent synced
// commits share a WAL fsync, but each batch still goes through the pipeline
// on its own, and on a 2-core machine the per-batch hand-offs, not the disk,
// bound the throughput. So synced Applies are combined here: callers queue
// their batches; one of them, the leader, writes everything queued as one
// Pebble batch with one fsync, wakes the others, and hands leadership to
// the first caller that queued meanwhile. A lone caller pays nothing extra:
// it leads a group of one.
//
// Leadership passes on after the fsync, to the first caller that queued
// meanwhile, so the next group holds everyone who arrived during this one's
// fsync. (Handing it on before the fsync, while Pebble's own pipeline syncs,
// was measured: groups shrank to one or two batches and throughput fell.)

// commitReq is one caller's synced batch waiting in the group queue.
type commitReq struct {
	b    *engine.Batch
	err  error
	lead bool          // set when woken to lead the next group
	wake chan struct{} // closed (or sent on) when err is set or lead is given
}

var reqPool = sync.Pool{New: func() any { return &commitReq{wake: make(chan struct{}, 1)} }}

// committer is the queue of synced batches.
type committer struct {
	mu      sync.Mutex
	queue   []*commitReq
	spare   []*commitReq
	leading bool // a leader is writing a group
}

// applySync writes b durably, sharing the fsync with concurrent callers.
func (s *Store) applySync(b *engine.Batch) error {
	req := reqPool.Get().(*commitReq)
	req.b, req.err, req.lead = b, nil, false
	c := &s.group
	c.mu.Lock()
	c.queue = append(c.queue, req)
	if c.leading {
		c.mu.Unlock()
		<-req.wake
		if !req.lead {
			return s.finish(req)
		}
		c.mu.Lock()
	}
	c.leading = true
	group := c.queue
	c.queue, c.spare = c.spare[:0], nil
	c.mu.Unlock()

	s.commitGroup(group)

	// Wake the group first and the next leader last: the goroutine readied
	// last runs next on this P, so the next group's write is not queued
	// behind the whole group's follow-up work.
	for _, r := range group {
		if r != req {
			r.wake <- struct{}{}
		}
	}
	c.mu.Lock()
	if len(c.queue) > 0 {
		next := c.queue[0]
		next.lead = true
		next.wake <- struct{}{}
	} else {
		c.leading = false
	}
	if c.spare == nil {
		clear(group)
		c.spare = group[:0]
	}
	c.mu.Unlock()
	return s.finish(req)
}

func (s *Store) finish(req *commitReq) error {
	err := req.err
	req.b, req.err = nil, nil
	reqPool.Put(req)
	return err
}

// commitGroup writes every valid batch of group as one Pebble batch with
// one fsync and sets each request's error.
func (s *Store) commitGroup(group []*commitReq) {
	pb := s.db.NewBatch()
	var counts countsAcc
	var bufs encBufs
	n := 0
	for _, r := range group {
		if err := checkBatch(r.b); err != nil {
			r.err = err
			continue
		}
		if err := appendBatch(pb, r.b, &counts, &bufs); err != nil {
			// checkBatch passed, so this is an encoding failure that may
			// have left part of r.b in pb: fail the whole group.
			setErr(group, errors.Join(err, pb.Close()))
			return
		}
		n++
	}
	var err error
	if n > 0 {
		if err = counts.flush(pb); err == nil {
			start := time.Now()
			if cerr := pb.Commit(pebble.Sync); cerr != nil {
				err = fmt.Errorf("persist: commit: %w", cerr)
			} else if s.opts.OnSync != nil {
				s.opts.OnSync(time.Since(start))
			}
		}
	}
	if cerr := pb.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("persist: close batch: %w", cerr)
	}
	setErr(group, err)
}

// setErr gives err to every request of group that has none yet.
func setErr(group []*commitReq, err error) {
	if err == nil {
		return
	}
	for _, r := range group {
		if r.err == nil {
			r.err = err
		}
	}
}

// checkBatch validates every op of b without writing anything.
func checkBatch(b *engine.Batch) error {
	for i := range b.Ops {
		op := &b.Ops[i]
		if why := op.Problem(); why != "" {
			return fmt.Errorf("%w: op %d (kind %d): %s", ErrInvalidBatch, i, op.Kind, why)
		}
	}
	return nil
}
