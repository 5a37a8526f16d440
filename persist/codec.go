package persist

// Value encoding, format version 1.
//
// Values start with a version byte so that a later format can be told apart.
// Integers are varints (zig-zag for signed ones), strings and byte slices are
// a uvarint length followed by the bytes.
//
//	message: 0x01, flags (bit 0 ToQueue, bit 1 Retain, bit 2 Origin), QoS,
//	         uvarint ID, varint PublishedAt, varint ExpiresAt,
//	         varint NotBefore, string Topic, [string Origin if bit 2],
//	         uvarint len(Props), {string Key, string Value}..., bytes Body
//	entry:   0x01, flags (bit 0 Shared), uvarint Seq, uvarint MsgID,
//	         uvarint Deliveries, varint ExpiresAt, then, unless Shared, the
//	         message encoding
//	queue:   0x01, meta bytes (the rest of the value)
//
// The entry's Key is not stored in the value: it is the record's key.
//
// Flag bit 2 was added after the first release: an empty Origin is not
// written and leaves the bit clear, so a message without one encodes as it
// always did and values written before still decode.
//
// Decoding checks every length against the bytes left and rejects trailing
// bytes, so truncated or garbage input gives an error wrapping
// engine.ErrCorrupt and never a panic or a huge allocation.

import (
	"encoding/binary"
	"math"

	"github.com/tandem-mq/tandem/engine"
)

const valueVersion byte = 1

const (
	msgFlagToQueue = 1 << 0
	msgFlagRetain  = 1 << 1
	msgFlagOrigin  = 1 << 2
	msgFlagsKnown  = msgFlagToQueue | msgFlagRetain | msgFlagOrigin

	entryFlagShared = 1 << 0
	entryFlagsKnown = entryFlagShared
)

// appendMessage appends the encoding of m to dst.
func appendMessage(dst []byte, m *engine.Message) []byte {
	var flags byte
	if m.ToQueue {
		flags |= msgFlagToQueue
	}
	if m.Retain {
		flags |= msgFlagRetain
	}
	if m.Origin != "" {
		flags |= msgFlagOrigin
	}
	dst = append(dst, valueVersion, flags, m.QoS)
	dst = binary.AppendUvarint(dst, m.ID)
	dst = binary.AppendVarint(dst, m.PublishedAt)
	dst = binary.AppendVarint(dst, m.ExpiresAt)
	dst = binary.AppendVarint(dst, m.NotBefore)
	dst = appendLenString(dst, m.Topic)
	if m.Origin != "" {
		dst = appendLenString(dst, m.Origin)
	}
	dst = binary.AppendUvarint(dst, uint64(len(m.Props)))
	for _, p := range m.Props {
		dst = appendLenString(dst, p.Key)
		dst = appendLenString(dst, p.Value)
	}
	dst = binary.AppendUvarint(dst, uint64(len(m.Body)))
	return append(dst, m.Body...)
}

// appendEntry appends the encoding of e to dst. The message is included
// unless the entry is shared.
func appendEntry(dst []byte, e *engine.Entry) []byte {
	var flags byte
	if e.Shared {
		flags |= entryFlagShared
	}
	dst = append(dst, valueVersion, flags)
	dst = binary.AppendUvarint(dst, e.Seq)
	dst = binary.AppendUvarint(dst, e.MsgID)
	dst = binary.AppendUvarint(dst, uint64(e.Deliveries))
	dst = binary.AppendVarint(dst, e.ExpiresAt)
	if !e.Shared {
		dst = appendMessage(dst, e.Msg)
	}
	return dst
}

func appendLenString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// decoder reads the value encoding; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = corruptf("bad value: %s", what)
	}
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail(what)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bytes returns the next length-prefixed field, aliasing the input.
func (d *decoder) bytes(what string) []byte {
	n := d.uvarint(what)
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail(what)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) version(what string) {
	if v := d.byte(what); d.err == nil && v != valueVersion {
		d.fail(what + " version")
	}
}

func (d *decoder) message(m *engine.Message) {
	d.version("message")
	flags := d.byte("message flags")
	if flags&^msgFlagsKnown != 0 {
		d.fail("message flags")
	}
	m.ToQueue = flags&msgFlagToQueue != 0
	m.Retain = flags&msgFlagRetain != 0
	m.QoS = d.byte("qos")
	m.ID = d.uvarint("id")
	m.PublishedAt = d.varint("published at")
	m.ExpiresAt = d.varint("expires at")
	m.NotBefore = d.varint("not before")
	m.Topic = string(d.bytes("topic"))
	if flags&msgFlagOrigin != 0 {
		// An empty origin is never written: re-encoding must give the
		// same bytes.
		if m.Origin = string(d.bytes("origin")); d.err == nil && m.Origin == "" {
			d.fail("empty origin")
		}
	}
	n := d.uvarint("property count")
	if d.err != nil {
		return
	}
	// Each property takes at least two bytes: this bounds the allocation.
	if n > uint64(len(d.b)/2) {
		d.fail("property count")
		return
	}
	if n > 0 {
		m.Props = make([]engine.Property, n)
		for i := range m.Props {
			m.Props[i].Key = string(d.bytes("property key"))
			m.Props[i].Value = string(d.bytes("property value"))
		}
	}
	if body := d.bytes("body"); d.err == nil {
		m.Body = append([]byte(nil), body...)
	}
}

func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	return d.err
}

// decodeMessage decodes a message encoded by appendMessage. The result does
// not alias b.
func decodeMessage(b []byte) (*engine.Message, error) {
	d := decoder{b: b}
	m := new(engine.Message)
	d.message(m)
	if err := d.finish(); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeEntry decodes an entry encoded by appendEntry. Key is left zero and
// Msg is nil for a shared entry. The result does not alias b.
func decodeEntry(b []byte) (engine.Entry, error) {
	d := decoder{b: b}
	var e engine.Entry
	d.version("entry")
	flags := d.byte("entry flags")
	if flags&^entryFlagsKnown != 0 {
		d.fail("entry flags")
	}
	e.Shared = flags&entryFlagShared != 0
	e.Seq = d.uvarint("seq")
	e.MsgID = d.uvarint("message id")
	deliveries := d.uvarint("deliveries")
	if deliveries > math.MaxUint32 {
		d.fail("deliveries")
	}
	e.Deliveries = uint32(deliveries)
	e.ExpiresAt = d.varint("entry expires at")
	if !e.Shared {
		e.Msg = new(engine.Message)
		d.message(e.Msg)
	}
	if err := d.finish(); err != nil {
		return engine.Entry{}, err
	}
	return e, nil
}

func appendQueueValue(dst, meta []byte) []byte {
	return append(append(dst, valueVersion), meta...)
}

func decodeQueueValue(b []byte) ([]byte, error) {
	if len(b) == 0 || b[0] != valueVersion {
		return nil, corruptf("bad queue record")
	}
	return append([]byte(nil), b[1:]...), nil
}

// appendUvarintValue and decodeUvarintValue encode reference counts.
func appendUvarintValue(dst []byte, v uint64) []byte { return binary.AppendUvarint(dst, v) }

func decodeUvarintValue(b []byte) (uint64, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 || n != len(b) {
		return 0, corruptf("bad uvarint value")
	}
	return v, nil
}
