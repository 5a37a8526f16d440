package persist

import (
	"encoding/binary"
	"io"

	"github.com/cockroachdb/pebble/v2"
)

// A queue's counts are kept as Pebble merge operands under its counts key,
// so that AddCounts is a blind write: no read, no lock. Each operand, and the
// merged value, is varint(count delta) varint(bytes delta). Pebble sums the
// operands when it reads the key or compacts it.

// countsMergerName is stored by Pebble in the OPTIONS file; a database
// written with one merger cannot be opened with another.
const countsMergerName = "tandem.counts.v1"

// merger sums counts operands. Tandem writes merge operands only under counts
// keys.
var merger = &pebble.Merger{
	Name: countsMergerName,
	Merge: func(key, value []byte) (pebble.ValueMerger, error) {
		if len(key) == 0 || key[0] != kindCounts {
			return nil, corruptf("merge operand under non-counts key %x", key)
		}
		m := &countsMerger{}
		if err := m.add(value); err != nil {
			return nil, err
		}
		return m, nil
	},
}

func appendCounts(dst []byte, count, bytes int64) []byte {
	dst = binary.AppendVarint(dst, count)
	return binary.AppendVarint(dst, bytes)
}

func decodeCounts(b []byte) (count, bytes int64, err error) {
	d := decoder{b: b}
	count = d.varint("count")
	bytes = d.varint("bytes")
	if err := d.finish(); err != nil {
		return 0, 0, err
	}
	return count, bytes, nil
}

type countsMerger struct {
	count, bytes int64
}

func (m *countsMerger) add(value []byte) error {
	c, b, err := decodeCounts(value)
	if err != nil {
		return err
	}
	m.count += c
	m.bytes += b
	return nil
}

// MergeNewer implements pebble.ValueMerger.
func (m *countsMerger) MergeNewer(value []byte) error { return m.add(value) }

// MergeOlder implements pebble.ValueMerger.
func (m *countsMerger) MergeOlder(value []byte) error { return m.add(value) }

// Finish implements pebble.ValueMerger. Sums are the same whether or not the
// base operand took part, so includesBase does not matter.
func (m *countsMerger) Finish(includesBase bool) ([]byte, io.Closer, error) {
	return appendCounts(nil, m.count, m.bytes), nil, nil
}
