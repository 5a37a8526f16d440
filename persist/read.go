package persist

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/tandem-mq/tandem/engine"
)

// Load implements engine.Store. It reads queue records, counts, bindings,
// refs and the id floor; it never reads queue entries. Queues come out
// sorted by name, bindings by filter then queue. Counts of a queue without
// a record are not reported.
func (s *Store) Load() (*engine.State, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	snap := s.db.NewSnapshot()
	st, err := load(snap)
	if cerr := snap.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("persist: load: %w", cerr)
	}
	if err != nil {
		return nil, err
	}
	return st, nil
}

func load(snap *pebble.Snapshot) (*engine.State, error) {
	st := &engine.State{Refs: make(map[uint64]uint32)}
	err := scanPrefix(snap, []byte{kindQueue}, func(k, v []byte) error {
		name, rest, err := decodeString(k[1:])
		if err != nil {
			return err
		}
		if len(rest) != 0 {
			return corruptf("trailing bytes in queue key")
		}
		meta, err := decodeQueueValue(v)
		if err != nil {
			return err
		}
		st.Queues = append(st.Queues, engine.QueueState{Name: name, Meta: meta})
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Counts keys sort like queue keys, so both lists are in name order.
	i := 0
	err = scanPrefix(snap, []byte{kindCounts}, func(k, v []byte) error {
		name, rest, err := decodeString(k[1:])
		if err != nil {
			return err
		}
		if len(rest) != 0 {
			return corruptf("trailing bytes in counts key")
		}
		count, nbytes, err := decodeCounts(v)
		if err != nil {
			return err
		}
		for i < len(st.Queues) && st.Queues[i].Name < name {
			i++
		}
		if i < len(st.Queues) && st.Queues[i].Name == name {
			st.Queues[i].Count, st.Queues[i].Bytes = count, nbytes
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = scanPrefix(snap, []byte{kindBinding}, func(k, _ []byte) error {
		filter, rest, err := decodeString(k[1:])
		if err != nil {
			return err
		}
		queue, rest, err := decodeString(rest)
		if err != nil {
			return err
		}
		if len(rest) != 0 {
			return corruptf("trailing bytes in binding key")
		}
		st.Bindings = append(st.Bindings, engine.Binding{Filter: filter, Queue: queue})
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = scanPrefix(snap, []byte{kindRef}, func(k, v []byte) error {
		id, rest, err := decodeUint64(k[1:])
		if err != nil {
			return err
		}
		if len(rest) != 0 {
			return corruptf("trailing bytes in ref key")
		}
		n, err := decodeUvarintValue(v)
		if err != nil {
			return err
		}
		if n > 1<<32-1 {
			return corruptf("reference count %d out of range", n)
		}
		st.Refs[id] = uint32(n)
		return nil
	})
	if err != nil {
		return nil, err
	}
	v, closer, err := snap.Get(idFloorKey())
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("persist: load id floor: %w", err)
	default:
		floor, rest, derr := decodeUint64(v)
		if derr == nil && len(rest) != 0 {
			derr = corruptf("trailing bytes in id floor")
		}
		if err := closer.Close(); err != nil {
			return nil, fmt.Errorf("persist: load id floor: %w", err)
		}
		if derr != nil {
			return nil, derr
		}
		st.IDFloor = floor
	}
	return st, nil
}

// reader is what scanPrefix needs: a pebble.Snapshot or DB.
type reader interface {
	NewIter(*pebble.IterOptions) (*pebble.Iterator, error)
}

// scanPrefix calls fn for every key starting with prefix, in order. The
// slices passed to fn are valid only during the call.
func scanPrefix(r reader, prefix []byte, fn func(k, v []byte) error) error {
	return scanRange(r, prefix, prefixEnd(prefix), 0, fn)
}

// scanRange calls fn for at most limit (<= 0: all) keys in [lower, upper).
func scanRange(r reader, lower, upper []byte, limit int, fn func(k, v []byte) error) error {
	iter, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("persist: new iterator: %w", err)
	}
	n := 0
	for valid := iter.First(); valid && (limit <= 0 || n < limit); valid = iter.Next() {
		v, err := iter.ValueAndErr()
		if err == nil {
			err = fn(iter.Key(), v)
		}
		if err != nil {
			return errors.Join(err, iter.Close())
		}
		n++
	}
	if err := iter.Error(); err != nil {
		return errors.Join(fmt.Errorf("persist: iterate: %w", err), iter.Close())
	}
	if err := iter.Close(); err != nil {
		return fmt.Errorf("persist: close iterator: %w", err)
	}
	return nil
}

// Scan implements engine.Store. The iterator's lower bound is the first key
// after after, so deleted history before it costs nothing. Shared entries get
// their message with a point read of the body in the same snapshot.
func (s *Store) Scan(queue string, idx engine.Index, after engine.Key, limit int, fn func(engine.Entry) error) error {
	if idx != engine.Ready && idx != engine.Scheduled {
		return fmt.Errorf("persist: scan: unknown index %d", idx)
	}
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	prefix := indexPrefix(queue, idx)
	upper := prefixEnd(prefix)
	var lower []byte
	switch {
	case after == (engine.Key{}):
		lower = prefix
	case idx == engine.Ready && after.Hi != 0:
		return nil // every Ready key is {0, seq}
	default:
		// The smallest key greater than after's.
		lower = append(entryKey(queue, idx, after), 0)
	}
	snap := s.db.NewSnapshot()
	err := scanRange(snap, lower, upper, limit, func(k, v []byte) error {
		key, err := decodeEntryKey(k, len(prefix), idx)
		if err != nil {
			return err
		}
		e, err := decodeEntry(v)
		if err != nil {
			return fmt.Errorf("queue %q %s %v: %w", queue, idx, key, err)
		}
		e.Key = key
		if e.Shared {
			if e.Msg, err = getBody(snap, e.MsgID); err != nil {
				return fmt.Errorf("queue %q %s %v: %w", queue, idx, key, err)
			}
		}
		return fn(e)
	})
	if cerr := snap.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("persist: scan: %w", cerr)
	}
	return err
}

func getBody(snap *pebble.Snapshot, id uint64) (*engine.Message, error) {
	v, closer, err := snap.Get(bodyKey(id))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, corruptf("shared body %d is missing", id)
	}
	if err != nil {
		return nil, fmt.Errorf("persist: read body %d: %w", id, err)
	}
	m, derr := decodeMessage(v)
	if err := closer.Close(); err != nil {
		return nil, fmt.Errorf("persist: read body %d: %w", id, err)
	}
	return m, derr
}

// ScanKV implements engine.Store.
func (s *Store) ScanKV(ns string, fn func(key string, value []byte) error) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	prefix := kvPrefix(ns)
	return scanPrefix(s.db, prefix, func(k, v []byte) error {
		key, rest, err := decodeString(k[len(prefix):])
		if err != nil {
			return err
		}
		if len(rest) != 0 {
			return corruptf("trailing bytes in kv key")
		}
		return fn(key, bytes.Clone(v))
	})
}
