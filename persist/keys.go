package persist

// Key encoding, format version 1.
//
// Every key starts with one byte naming its record kind, followed by a tuple
// of fields. The encoding is unambiguous (no two tuples share a key, whatever
// bytes the strings hold) and order-preserving (keys of one kind sort as
// their tuples do, field by field), so that a queue's entries are contiguous
// and in Key order, and a span of them can be removed with one DeleteRange.
//
// Fields are encoded as:
//
//	string  the bytes, with each 0x00 written as 0x00 0xFF, then the
//	        terminator 0x00 0x01. The terminator sorts below every escaped
//	        byte, so "a" < "a\x00" < "ab", and no encoded string is a
//	        prefix of another one.
//	uint64  8 bytes, big-endian.
//
// Record kinds and their fields:
//
//	0x01 format version              ()                   -> "tandem.v1"
//	0x10 queue record                (queue string)       -> valueVersion, meta
//	0x11 queue counts                (queue string)       -> merge operands, see counts.go
//	0x12 ready entry                 (queue string, seq)  -> entry
//	0x13 scheduled entry             (queue string, due, seq) -> entry
//	0x14 shared body                 (id)                 -> message
//	0x15 shared body reference count (id)                 -> uvarint
//	0x16 binding                     (filter string, queue string) -> empty
//	0x17 id floor                    ()                   -> uint64
//	0x18 adapter key/value           (ns string, key string) -> value
//
// A change to any of these layouts needs a new format version.

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/tandem-mq/tandem/engine"
)

// formatVersion is stored under kindVersion and checked on Open.
const formatVersion = "tandem.v1"

// Record kinds: the first byte of every key.
const (
	kindVersion   byte = 0x01
	kindQueue     byte = 0x10
	kindCounts    byte = 0x11
	kindReady     byte = 0x12
	kindScheduled byte = 0x13
	kindBody      byte = 0x14
	kindRef       byte = 0x15
	kindBinding   byte = 0x16
	kindIDFloor   byte = 0x17
	kindKV        byte = 0x18
)

const (
	escByte  = 0x00 // starts an escape or a terminator
	escNul   = 0xFF // 0x00 0xFF is an escaped 0x00
	escTerm  = 0x01 // 0x00 0x01 ends a string
	u64Bytes = 8
)

// appendString appends the order-preserving encoding of s to dst.
func appendString(dst []byte, s string) []byte {
	for {
		i := indexNul(s)
		if i < 0 {
			dst = append(dst, s...)
			break
		}
		dst = append(dst, s[:i]...)
		dst = append(dst, escByte, escNul)
		s = s[i+1:]
	}
	return append(dst, escByte, escTerm)
}

func indexNul(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return i
		}
	}
	return -1
}

// decodeString decodes a string encoded by appendString at the start of b
// and returns it with the rest of b.
func decodeString(b []byte) (string, []byte, error) {
	var out []byte
	for {
		i := bytes.IndexByte(b, escByte)
		if i < 0 || i+1 >= len(b) {
			return "", nil, corruptf("unterminated string in key")
		}
		out = append(out, b[:i]...)
		switch b[i+1] {
		case escTerm:
			return string(out), b[i+2:], nil
		case escNul:
			out = append(out, 0)
			b = b[i+2:]
		default:
			return "", nil, corruptf("bad escape 0x00 0x%02x in key", b[i+1])
		}
	}
}

func appendUint64(dst []byte, v uint64) []byte {
	return binary.BigEndian.AppendUint64(dst, v)
}

func decodeUint64(b []byte) (uint64, []byte, error) {
	if len(b) < u64Bytes {
		return 0, nil, corruptf("short uint64 in key")
	}
	return binary.BigEndian.Uint64(b), b[u64Bytes:], nil
}

func versionKey() []byte { return []byte{kindVersion} }
func idFloorKey() []byte { return []byte{kindIDFloor} }

func queueKey(queue string) []byte  { return appendString([]byte{kindQueue}, queue) }
func countsKey(queue string) []byte { return appendString([]byte{kindCounts}, queue) }

// indexPrefix returns the prefix shared by every entry of idx of queue.
func indexPrefix(queue string, idx engine.Index) []byte {
	return appendIndexPrefix(nil, queue, idx)
}

// appendIndexPrefix appends indexPrefix(queue, idx) to dst.
func appendIndexPrefix(dst []byte, queue string, idx engine.Index) []byte {
	kind := kindReady
	if idx == engine.Scheduled {
		kind = kindScheduled
	}
	return appendString(append(dst, kind), queue)
}

// entryKey returns the key of the entry at k in idx of queue. Ready keys
// hold only k.Lo (the seq): their Hi is always 0.
func entryKey(queue string, idx engine.Index, k engine.Key) []byte {
	return appendEntryKey(nil, queue, idx, k)
}

// appendEntryKey appends entryKey(queue, idx, k) to dst.
func appendEntryKey(dst []byte, queue string, idx engine.Index, k engine.Key) []byte {
	b := appendIndexPrefix(dst, queue, idx)
	if idx == engine.Scheduled {
		b = appendUint64(b, k.Hi)
	}
	return appendUint64(b, k.Lo)
}

// decodeEntryKey returns the engine.Key of an entry key of idx whose prefix
// (of length prefixLen) is already known.
func decodeEntryKey(key []byte, prefixLen int, idx engine.Index) (engine.Key, error) {
	if len(key) < prefixLen {
		return engine.Key{}, corruptf("short entry key")
	}
	rest := key[prefixLen:]
	var k engine.Key
	var err error
	if idx == engine.Scheduled {
		if k.Hi, rest, err = decodeUint64(rest); err != nil {
			return engine.Key{}, err
		}
	}
	if k.Lo, rest, err = decodeUint64(rest); err != nil {
		return engine.Key{}, err
	}
	if len(rest) != 0 {
		return engine.Key{}, corruptf("trailing bytes in entry key")
	}
	return k, nil
}

func bodyKey(id uint64) []byte { return appendUint64([]byte{kindBody}, id) }
func refKey(id uint64) []byte  { return appendUint64([]byte{kindRef}, id) }

func bindingKey(filter, queue string) []byte {
	return appendString(appendString([]byte{kindBinding}, filter), queue)
}

func kvPrefix(ns string) []byte { return appendString([]byte{kindKV}, ns) }

func kvKey(ns, key string) []byte { return appendString(kvPrefix(ns), key) }

// prefixEnd returns the smallest key greater than every key starting with
// prefix. Every prefix used here ends in a string terminator or a kind byte,
// neither of which is 0xFF, so incrementing the last byte is enough.
func prefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xFF {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // no upper bound
}

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: persist: "+format, append([]any{engine.ErrCorrupt}, args...)...)
}
