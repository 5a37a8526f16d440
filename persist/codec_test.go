package persist

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/tandem-mq/tandem/engine"
)

func sampleMessage() *engine.Message {
	return &engine.Message{
		ID: math.MaxUint64, Topic: "a/b\x00c", ToQueue: true,
		Props: []engine.Property{{Key: "k", Value: "1"}, {Key: "k", Value: ""}, {Key: "", Value: "x"}},
		Body:  []byte("x\x00y"),
		QoS:   2, Retain: true, PublishedAt: -7, ExpiresAt: math.MaxInt64, NotBefore: math.MinInt64,
		Origin: "mqtt:dev\x00ice",
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range []*engine.Message{sampleMessage(), {}, {Body: []byte{}}, {Props: []engine.Property{{}}}, {Origin: "o"}} {
		enc := appendMessage(nil, m)
		got, err := decodeMessage(enc)
		if err != nil {
			t.Fatalf("decode(%+v): %v", m, err)
		}
		want := *m
		if len(want.Body) == 0 {
			want.Body = nil
		}
		if len(want.Props) == 0 {
			want.Props = nil
		}
		if !reflect.DeepEqual(got, &want) {
			t.Fatalf("round trip:\ngot  %+v\nwant %+v", got, &want)
		}
		// Every truncation is an error, never a panic.
		for i := 0; i < len(enc); i++ {
			if _, err := decodeMessage(enc[:i]); !errors.Is(err, engine.ErrCorrupt) {
				t.Fatalf("decode of %d of %d bytes = %v, want ErrCorrupt", i, len(enc), err)
			}
		}
		if _, err := decodeMessage(append(enc, 0)); !errors.Is(err, engine.ErrCorrupt) {
			t.Fatalf("trailing byte accepted: %v", err)
		}
	}
}

// TestMessageEncodingTable pins the bytes of the message encoding. The
// first case is how every message was written before Origin existed: it
// must still decode, and a message without an origin still encodes to it.
func TestMessageEncodingTable(t *testing.T) {
	cases := []struct {
		name string
		raw  []byte
		m    engine.Message
	}{
		{"no origin (format as first released)",
			[]byte{1, 0x03, 1, 5, 4, 0, 0, 1, 't', 1, 1, 'k', 1, 'v', 2, 'h', 'i'},
			engine.Message{ID: 5, PublishedAt: 2, Topic: "t", ToQueue: true, Retain: true, QoS: 1,
				Props: []engine.Property{{Key: "k", Value: "v"}}, Body: []byte("hi")}},
		{"origin",
			[]byte{1, 0x04, 0, 5, 0, 0, 0, 1, 't', 3, 'c', ':', '1', 0, 0},
			engine.Message{ID: 5, Topic: "t", Origin: "c:1"}},
	}
	for _, c := range cases {
		got, err := decodeMessage(c.raw)
		if err != nil {
			t.Fatalf("%s: decode: %v", c.name, err)
		}
		if !reflect.DeepEqual(got, &c.m) {
			t.Fatalf("%s: decoded\n%+v\nwant\n%+v", c.name, got, &c.m)
		}
		if enc := appendMessage(nil, &c.m); !bytes.Equal(enc, c.raw) {
			t.Fatalf("%s: encoded %x, want %x", c.name, enc, c.raw)
		}
	}
	// The origin flag with an empty origin is never written.
	if _, err := decodeMessage([]byte{1, 0x04, 0, 5, 0, 0, 0, 1, 't', 0, 0, 0}); !errors.Is(err, engine.ErrCorrupt) {
		t.Fatalf("empty origin accepted: %v", err)
	}
}

func TestEntryRoundTrip(t *testing.T) {
	for _, e := range []engine.Entry{
		{Seq: 1, MsgID: 2, Deliveries: math.MaxUint32, ExpiresAt: -1, Msg: sampleMessage()},
		{Seq: math.MaxUint64, MsgID: 9, Shared: true},
	} {
		enc := appendEntry(nil, &e)
		got, err := decodeEntry(enc)
		if err != nil || !reflect.DeepEqual(got, e) {
			t.Fatalf("round trip: got %+v, %v, want %+v", got, err, e)
		}
		for i := 0; i < len(enc); i++ {
			if _, err := decodeEntry(enc[:i]); !errors.Is(err, engine.ErrCorrupt) {
				t.Fatalf("decode of %d of %d bytes = %v, want ErrCorrupt", i, len(enc), err)
			}
		}
	}
}

func TestDecodeGarbage(t *testing.T) {
	cases := [][]byte{
		nil,
		{2},             // unknown version
		{1, 0x80},       // unknown flag
		{1, 0, 0, 0x80}, // unterminated varint
		{1, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},    // huge topic length
		{1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, // huge property count
	}
	for _, b := range cases {
		if _, err := decodeMessage(b); !errors.Is(err, engine.ErrCorrupt) {
			t.Errorf("decodeMessage(%x) = %v, want ErrCorrupt", b, err)
		}
		if _, err := decodeEntry(b); !errors.Is(err, engine.ErrCorrupt) {
			t.Errorf("decodeEntry(%x) = %v, want ErrCorrupt", b, err)
		}
	}
	// Deliveries beyond uint32.
	if _, err := decodeEntry([]byte{1, 1, 1, 1, 0xff, 0xff, 0xff, 0xff, 0x1f, 0}); !errors.Is(err, engine.ErrCorrupt) {
		t.Errorf("deliveries overflow accepted: %v", err)
	}
}

func TestCountsMerger(t *testing.T) {
	vm, err := merger.Merge(countsKey("q"), appendCounts(nil, 2, 20))
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range [][2]int64{{-1, -10}, {5, 5}} {
		if err := vm.MergeNewer(appendCounts(nil, op[0], op[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := vm.MergeOlder(appendCounts(nil, 1, 1)); err != nil {
		t.Fatal(err)
	}
	out, _, err := vm.Finish(true)
	if err != nil {
		t.Fatal(err)
	}
	if c, b, err := decodeCounts(out); err != nil || c != 7 || b != 16 {
		t.Fatalf("merged = %d/%d, %v, want 7/16", c, b, err)
	}
	if err := vm.MergeNewer([]byte{0x80}); !errors.Is(err, engine.ErrCorrupt) {
		t.Fatalf("bad operand = %v, want ErrCorrupt", err)
	}
	if _, err := merger.Merge(queueKey("q"), appendCounts(nil, 1, 1)); !errors.Is(err, engine.ErrCorrupt) {
		t.Fatalf("merge on a non-counts key = %v, want ErrCorrupt", err)
	}
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(appendMessage(nil, sampleMessage()))
	f.Add(appendMessage(nil, &engine.Message{}))
	f.Add(appendMessage(nil, &engine.Message{Origin: "stomp:7", Topic: "t"}))
	f.Add([]byte{1, 3, 2})
	f.Add([]byte{1, 4, 0, 0, 0, 0, 0, 0, 1, 'o', 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			if !errors.Is(err, engine.ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		enc := appendMessage(nil, m)
		m2, err := decodeMessage(enc)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-encode: %+v -> %+v, %v", m, m2, err)
		}
		// The result must not alias the input.
		for i := range b {
			b[i] ^= 0xff
		}
		if !bytes.Equal(appendMessage(nil, m), enc) {
			t.Fatal("decoded message aliases the input")
		}
	})
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add(appendEntry(nil, &engine.Entry{Seq: 1, MsgID: 2, Deliveries: 3, ExpiresAt: 4, Msg: sampleMessage()}))
	f.Add(appendEntry(nil, &engine.Entry{Seq: 1, Shared: true}))
	f.Add(appendEntry(nil, &engine.Entry{Seq: 1, MsgID: 1, Msg: &engine.Message{Origin: "mqtt:c"}}))
	f.Add([]byte{1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEntry(b)
		if err != nil {
			if !errors.Is(err, engine.ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		e2, err := decodeEntry(appendEntry(nil, &e))
		if err != nil || !reflect.DeepEqual(e, e2) {
			t.Fatalf("re-encode: %+v -> %+v, %v", e, e2, err)
		}
	})
}
