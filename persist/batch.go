package persist

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/tandem-mq/tandem/engine"
)

// buildBatch translates b into pb. It stops at the first invalid operation;
// the caller then discards pb, so nothing of b is written.
func buildBatch(pb *pebble.Batch, b *engine.Batch) error {
	var counts countsAcc
	var bufs encBufs
	if err := appendBatch(pb, b, &counts, &bufs); err != nil {
		return err
	}
	return counts.flush(pb)
}

// countsAcc sums the AddCounts of one Pebble batch per queue, so a batch
// that publishes or acks many messages of a queue writes one merge operand
// instead of one per message.
type countsAcc struct {
	order []string
	sums  map[string]*[2]int64
}

func (c *countsAcc) add(queue string, n, bytes int64) {
	if c.sums == nil {
		c.sums = make(map[string]*[2]int64)
	}
	s := c.sums[queue]
	if s == nil {
		s = new([2]int64)
		c.sums[queue] = s
		c.order = append(c.order, queue)
	}
	s[0] += n
	s[1] += bytes
}

// drop forgets the sums of a queue that the batch deletes: the delete
// removes its counts, and only AddCounts after it count.
func (c *countsAcc) drop(queue string) {
	if s := c.sums[queue]; s != nil {
		*s = [2]int64{}
	}
}

// flush writes one merge operand per queue with a non-zero sum.
func (c *countsAcc) flush(pb *pebble.Batch) error {
	var buf []byte
	for _, q := range c.order {
		s := c.sums[q]
		if s[0] == 0 && s[1] == 0 {
			continue
		}
		if err := pb.Merge(countsKey(q), appendCounts(buf[:0], s[0], s[1]), nil); err != nil {
			return fmt.Errorf("persist: batch: %w", err)
		}
	}
	return nil
}

// encBufs are the key and value buffers one batch's encoding reuses:
// Pebble copies keys and values into the batch, so one of each serves
// every op.
type encBufs struct {
	key, val []byte
}

// value keeps the (possibly grown) value buffer for the next op and
// returns the encoded value.
func value(buf *[]byte, v []byte) []byte {
	*buf = v[:0]
	return v
}

// appendBatch adds b's operations to pb, leaving its counts in counts.
func appendBatch(pb *pebble.Batch, b *engine.Batch, counts *countsAcc, bufs *encBufs) error {
	buf := bufs.val[:0]
	defer func() { bufs.val = buf[:0] }()
	for i := range b.Ops {
		op := &b.Ops[i]
		if why := op.Problem(); why != "" {
			return fmt.Errorf("%w: op %d (kind %d): %s", ErrInvalidBatch, i, op.Kind, why)
		}
		buf = buf[:0]
		var err error
		switch op.Kind {
		case engine.OpPutQueue:
			err = pb.Set(queueKey(op.Queue), value(&buf, appendQueueValue(buf, op.Meta)), nil)
		case engine.OpDeleteQueue:
			counts.drop(op.Queue)
			err = deleteQueue(pb, op.Queue)
		case engine.OpPutEntry:
			bufs.key = appendEntryKey(bufs.key[:0], op.Queue, op.Index, op.Entry.Key)
			err = pb.Set(bufs.key, value(&buf, appendEntry(buf, &op.Entry)), nil)
		case engine.OpDeleteEntry:
			bufs.key = appendEntryKey(bufs.key[:0], op.Queue, op.Index, op.Key)
			err = pb.Delete(bufs.key, nil)
		case engine.OpPurgeIndex:
			p := indexPrefix(op.Queue, op.Index)
			err = pb.DeleteRange(p, prefixEnd(p), nil)
		case engine.OpTrimReady:
			if op.Key.Lo > 0 {
				err = pb.DeleteRange(indexPrefix(op.Queue, engine.Ready),
					entryKey(op.Queue, engine.Ready, engine.Key{Lo: op.Key.Lo}), nil)
			}
		case engine.OpPutBody:
			err = pb.Set(bodyKey(op.Msg.ID), value(&buf, appendMessage(buf, op.Msg)), nil)
		case engine.OpDeleteBody:
			err = pb.Delete(bodyKey(op.ID), nil)
		case engine.OpPutRef:
			err = pb.Set(refKey(op.ID), value(&buf, appendUvarintValue(buf, uint64(op.N))), nil)
		case engine.OpDeleteRef:
			err = pb.Delete(refKey(op.ID), nil)
		case engine.OpAddCounts:
			counts.add(op.Queue, op.N, op.Bytes)
		case engine.OpPutBinding:
			err = pb.Set(bindingKey(op.Filter, op.Queue), nil, nil)
		case engine.OpDeleteBinding:
			err = pb.Delete(bindingKey(op.Filter, op.Queue), nil)
		case engine.OpSetIDFloor:
			err = pb.Set(idFloorKey(), value(&buf, appendUint64(buf, op.ID)), nil)
		case engine.OpPutKV:
			err = pb.Set(kvKey(op.NS, op.KVKey), op.Value, nil)
		case engine.OpDeleteKV:
			err = pb.Delete(kvKey(op.NS, op.KVKey), nil)
		}
		if err != nil {
			return fmt.Errorf("persist: build batch: op %d: %w", i, err)
		}
	}
	return nil
}

// deleteQueue removes a queue's record, counts and both indexes. The indexes
// go in range deletions, so the cost does not depend on their size.
func deleteQueue(pb *pebble.Batch, queue string) error {
	if err := pb.Delete(queueKey(queue), nil); err != nil {
		return err
	}
	if err := pb.Delete(countsKey(queue), nil); err != nil {
		return err
	}
	for _, idx := range []engine.Index{engine.Ready, engine.Scheduled} {
		p := indexPrefix(queue, idx)
		if err := pb.DeleteRange(p, prefixEnd(p), nil); err != nil {
			return err
		}
	}
	return nil
}
