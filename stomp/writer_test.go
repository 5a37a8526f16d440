package stomp

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/go-stomp/stomp/v3/frame"
)

// writeCase is one encoding case: a frame, how to encode it, and the bytes.
type writeCase struct {
	desc    string
	f       *frame.Frame
	version Version
	escape  bool
	raw     string
}

var writeCases = []writeCase{
	{desc: "heart-beat", raw: "\n"},
	{desc: "no headers", f: fr("DISCONNECT", ""), version: V12, escape: true, raw: "DISCONNECT\n\n\x00"},
	{desc: "nil header", f: &frame.Frame{Command: "DISCONNECT"}, version: V12, escape: true, raw: "DISCONNECT\n\n\x00"},
	{desc: "spec MESSAGE", f: fr("MESSAGE", "hello queue a", "subscription", "0", "message-id", "007", "destination", "/queue/a"),
		version: V12, escape: true, raw: "MESSAGE\nsubscription:0\nmessage-id:007\ndestination:/queue/a\n\nhello queue a\x00"},
	{desc: "body with NULs", f: fr("MESSAGE", "a\x00b", "content-length", "3"),
		version: V12, escape: true, raw: "MESSAGE\ncontent-length:3\n\na\x00b\x00"},
	{desc: "escape 1.2", f: fr("MESSAGE", "", "a:b\\c", "x\ny\rz:"),
		version: V12, escape: true, raw: "MESSAGE\na\\cb\\\\c:x\\ny\\rz\\c\n\n\x00"},
	{desc: "escape 1.1 leaves CR", f: fr("MESSAGE", "", "a:b\\c", "x\ny\rz:"),
		version: V11, escape: true, raw: "MESSAGE\na\\cb\\\\c:x\\ny\rz\\c\n\n\x00"},
	{desc: "1.0 sanitises", f: fr("MESSAGE", "", "a:b\\c", "x\ny\rz:", "ev\nil:hdr", "v"),
		version: V10, escape: false, raw: "MESSAGE\na b\\c:x y z:\nev il hdr:v\n\n\x00"},
	{desc: "CONNECTED unescaped", f: fr("CONNECTED", "", "version", "1.2", "server", "tandem/1\\x", "session", "a:b"),
		version: V12, escape: false, raw: "CONNECTED\nversion:1.2\nserver:tandem/1\\x\nsession:a:b\n\n\x00"},
	{desc: "repeated headers", f: fr("MESSAGE", "", "foo", "World", "foo", "Hello"),
		version: V12, escape: true, raw: "MESSAGE\nfoo:World\nfoo:Hello\n\n\x00"},
}

func TestAppendFrame(t *testing.T) {
	for _, c := range writeCases {
		got := AppendFrame(nil, c.f, c.version, c.escape)
		if string(got) != c.raw {
			t.Errorf("%s: got %q, want %q", c.desc, got, c.raw)
		}
		// AppendFrame appends; it keeps what dst holds.
		got = AppendFrame([]byte("prefix"), c.f, c.version, c.escape)
		if string(got) != "prefix"+c.raw {
			t.Errorf("%s: with prefix got %q", c.desc, got)
		}
	}
}

// roundTripFrames are frames that survive AppendFrame then Read in every
// version: no LF or CR in keys or values (1.0 cannot carry them, and 1.1
// loses a CR that ends a value) and no colon in keys.
var roundTripFrames = []*frame.Frame{
	fr("SEND", "hello queue a\n", "destination", "/queue/a", "content-type", "text/plain"),
	fr("SEND", "\x00a\x00", "destination", "/queue/a", "content-length", "3"),
	fr("MESSAGE", "", "subscription", "0", "message-id", "007", "destination", "/queue/a", "x", "a:b\\c"),
	fr("MESSAGE", "", "foo", "World", "foo", "Hello", "empty", ""),
	fr("RECEIPT", "", "receipt-id", "message-12345"),
	fr("ERROR", errorBody, "message", "malformed frame received", "content-length", fmt.Sprint(len(errorBody))),
	fr("CONNECTED", "", "version", "1.2", "server", "tandem/0.1 x\\y:z", "heart-beat", "0,0"),
	fr("CONNECT", "", "accept-version", "1.0,1.1,1.2", "host", "/", "login", "a\\b:c"),
	fr("DISCONNECT", ""),
}

// escapingFrames round-trip only where headers are escaped.
var escapingFrames = map[Version][]*frame.Frame{
	V11: {fr("MESSAGE", "", "k:\n\\", "v:\n\\\r x", "a\rb", "")},
	V12: {fr("MESSAGE", "", "k:\n\\\r", "v:\n\\\r", "\r", "\r\n")},
}

// escapeFor says how the server encodes f for version v.
func escapeFor(f *frame.Frame, v Version) bool {
	switch f.Command {
	case frame.CONNECTED, frame.CONNECT, frame.STOMP:
		return false
	}
	return v >= V11
}

func TestRoundTrip(t *testing.T) {
	for _, v := range []Version{V10, V11, V12} {
		frames := append(append([]*frame.Frame{nil}, roundTripFrames...), escapingFrames[v]...)
		var wire []byte
		for _, f := range frames {
			wire = AppendFrame(wire, f, v, f != nil && escapeFor(f, v))
		}
		for _, sr := range splitReaders {
			r := NewReader(sr.wrap(bytes.NewReader(wire)), testLimits)
			r.SetVersion(v)
			got, err := readAll(r)
			t.Run(v.String()+"/"+sr.name, func(t *testing.T) { checkFrames(t, got, frames, err, nil) })
		}
	}
}

// TestAppendFrameAllocs checks that encoding into a buffer with room
// allocates nothing.
func TestAppendFrameAllocs(t *testing.T) {
	f := benchMessage()
	buf := make([]byte, 0, 4096)
	allocs := testing.AllocsPerRun(100, func() { buf = AppendFrame(buf[:0], f, V12, true) })
	if allocs != 0 {
		t.Fatalf("%.0f allocations", allocs)
	}
}

// benchMessage is a typical MESSAGE frame with a 1 KiB body.
func benchMessage() *frame.Frame {
	return fr("MESSAGE", strings.Repeat("x", 1024),
		"subscription", "sub-0",
		"message-id", "T_sub-0@@session-1@@1234",
		"destination", "/queue/orders",
		"content-type", "text/plain",
		"content-length", "1024",
		"ack", "ack-1234",
		"note", "needs:escaping\\here")
}

// BenchmarkAppendFrame encodes a 1 KiB MESSAGE frame into a reused buffer.
func BenchmarkAppendFrame(b *testing.B) {
	f := benchMessage()
	buf := AppendFrame(nil, f, V12, true)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendFrame(buf[:0], f, V12, true)
	}
}
