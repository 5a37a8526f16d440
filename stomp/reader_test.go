package stomp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/go-stomp/stomp/v3/frame"
)

// testLimits are generous enough for every table case.
var testLimits = Limits{MaxLine: 1024, MaxHeaders: 16, MaxBody: 1 << 16}

// readCase is one byte-table case, after mochi's TPacketCase: raw bytes,
// the frames they decode to (nil for a heart-beat), and the error that ends
// the stream (nil means a clean io.EOF after the last frame).
type readCase struct {
	desc    string
	raw     string
	version Version // 0 means V12
	want    []*frame.Frame
	err     error
}

// fr builds a frame; body "" means no body.
func fr(command, body string, headers ...string) *frame.Frame {
	f := frame.New(command, headers...)
	if body != "" {
		f.Body = []byte(body)
	}
	return f
}

// errorBody is the spec's ERROR frame body.
const errorBody = "The message:\n-----\nMESSAGE\ndestined:/queue/a\nreceipt:message-12345\n\nHello queue a!\n-----\nDid not contain a destination header, which is REQUIRED\nfor message propagation.\n"

// readCases holds the STOMP 1.2 specification's examples and the decoding
// rules around them; the fuzz test seeds its corpus from it.
var readCases = []readCase{
	// STOMP 1.2, "Connecting" and "CONNECT or STOMP Frame".
	{desc: "spec CONNECT", raw: "CONNECT\naccept-version:1.2\nhost:stomp.github.org\n\n\x00",
		want: []*frame.Frame{fr("CONNECT", "", "accept-version", "1.2", "host", "stomp.github.org")}},
	{desc: "spec STOMP", raw: "STOMP\naccept-version:1.0,1.1,2.0\nhost:stomp.github.org\n\n\x00",
		want: []*frame.Frame{fr("STOMP", "", "accept-version", "1.0,1.1,2.0", "host", "stomp.github.org")}},
	{desc: "spec CONNECTED", raw: "CONNECTED\nversion:1.2\n\n\x00",
		want: []*frame.Frame{fr("CONNECTED", "", "version", "1.2")}},
	{desc: "spec ERROR version", raw: "ERROR\nversion:1.2,2.1\ncontent-type:text/plain\n\nSupported protocol versions are 1.2 2.1\x00",
		want: []*frame.Frame{fr("ERROR", "Supported protocol versions are 1.2 2.1", "version", "1.2,2.1", "content-type", "text/plain")}},
	// "SEND", "SUBSCRIBE", "MESSAGE", "RECEIPT", "ERROR".
	{desc: "spec SEND", raw: "SEND\ndestination:/queue/a\ncontent-type:text/plain\n\nhello queue a\n\x00",
		want: []*frame.Frame{fr("SEND", "hello queue a\n", "destination", "/queue/a", "content-type", "text/plain")}},
	{desc: "SEND with content-length", raw: "SEND\ndestination:/queue/a\ncontent-length:13\n\nhello queue a\x00",
		want: []*frame.Frame{fr("SEND", "hello queue a", "destination", "/queue/a", "content-length", "13")}},
	{desc: "body with NULs", raw: "SEND\ndestination:/queue/a\ncontent-length:5\n\n\x00a\x00b\x00\x00",
		want: []*frame.Frame{fr("SEND", "\x00a\x00b\x00", "destination", "/queue/a", "content-length", "5")}},
	{desc: "content-length 0", raw: "SEND\ndestination:/q\ncontent-length:0\n\n\x00",
		want: []*frame.Frame{fr("SEND", "", "destination", "/q", "content-length", "0")}},
	{desc: "content-length leading zeros", raw: "SEND\ncontent-length:003\n\nabc\x00",
		want: []*frame.Frame{fr("SEND", "abc", "content-length", "003")}},
	{desc: "spec SUBSCRIBE", raw: "SUBSCRIBE\nid:0\ndestination:/queue/foo\nack:client\n\n\x00",
		want: []*frame.Frame{fr("SUBSCRIBE", "", "id", "0", "destination", "/queue/foo", "ack", "client")}},
	{desc: "spec BEGIN SEND COMMIT", raw: "BEGIN\ntransaction:tx1\n\n\x00SEND\ndestination:/queue/a\ntransaction:tx1\ncontent-type:text/plain\n\nhello queue a\x00COMMIT\ntransaction:tx1\n\n\x00",
		want: []*frame.Frame{
			fr("BEGIN", "", "transaction", "tx1"),
			fr("SEND", "hello queue a", "destination", "/queue/a", "transaction", "tx1", "content-type", "text/plain"),
			fr("COMMIT", "", "transaction", "tx1"),
		}},
	{desc: "spec MESSAGE", raw: "MESSAGE\nsubscription:0\nmessage-id:007\ndestination:/queue/a\ncontent-type:text/plain\n\nhello queue a\x00",
		want: []*frame.Frame{fr("MESSAGE", "hello queue a", "subscription", "0", "message-id", "007", "destination", "/queue/a", "content-type", "text/plain")}},
	{desc: "spec RECEIPT", raw: "RECEIPT\nreceipt-id:message-12345\n\n\x00",
		want: []*frame.Frame{fr("RECEIPT", "", "receipt-id", "message-12345")}},
	{desc: "spec ERROR", raw: fmt.Sprintf("ERROR\nreceipt-id:message-12345\ncontent-type:text/plain\ncontent-length:%d\nmessage:malformed frame received\n\n%s\x00", len(errorBody), errorBody),
		want: []*frame.Frame{fr("ERROR", errorBody, "receipt-id", "message-12345", "content-type", "text/plain", "content-length", fmt.Sprint(len(errorBody)), "message", "malformed frame received")}},
	{desc: "spec DISCONNECT", raw: "DISCONNECT\nreceipt:77\n\n\x00",
		want: []*frame.Frame{fr("DISCONNECT", "", "receipt", "77")}},
	// "Value Encoding", per version.
	{desc: "escapes 1.2", raw: "MESSAGE\nk\\c\\n\\r\\\\:v\\c\\r\\n\\\\x\n\n\x00",
		want: []*frame.Frame{fr("MESSAGE", "", "k:\n\r\\", "v:\r\n\\x")}},
	{desc: "escapes 1.1", version: V11, raw: "MESSAGE\nk\\c\\n\\\\:v\\c\\n\\\\x\n\n\x00",
		want: []*frame.Frame{fr("MESSAGE", "", "k:\n\\", "v:\n\\x")}},
	{desc: "\\r is bad in 1.1", version: V11, raw: "MESSAGE\nk:v\\r\n\n\x00", err: ErrBadEscape},
	{desc: "no escapes in 1.0", version: V10, raw: "MESSAGE\nk\\c:v\\n\\t\\\n\n\x00",
		want: []*frame.Frame{fr("MESSAGE", "", "k\\c", "v\\n\\t\\")}},
	{desc: "CONNECT is never unescaped", raw: "CONNECT\nlogin:a\\tb\\c\npasscode:x\\\n\n\x00",
		want: []*frame.Frame{fr("CONNECT", "", "login", "a\\tb\\c", "passcode", "x\\")}},
	{desc: "STOMP is never unescaped", raw: "STOMP\nlogin:a\\t\n\n\x00",
		want: []*frame.Frame{fr("STOMP", "", "login", "a\\t")}},
	{desc: "CONNECTED is never unescaped", version: V11, raw: "CONNECTED\nserver:x\\y\n\n\x00",
		want: []*frame.Frame{fr("CONNECTED", "", "server", "x\\y")}},
	{desc: "bad escape \\t", raw: "SEND\nk:a\\tb\n\n\x00", err: ErrBadEscape},
	{desc: "bad escape in key", raw: "SEND\nk\\x:v\n\n\x00", err: ErrBadEscape},
	{desc: "trailing backslash", raw: "SEND\nk:ab\\\n\n\x00", err: ErrBadEscape},
	{desc: "colon in value", raw: "SEND\nk:a:b\n\n\x00",
		want: []*frame.Frame{fr("SEND", "", "k", "a:b")}},
	// "Repeated Header Entries": the first one wins.
	{desc: "repeated headers", raw: "MESSAGE\nfoo:World\nfoo:Hello\n\n\x00",
		want: []*frame.Frame{fr("MESSAGE", "", "foo", "World", "foo", "Hello")}},
	{desc: "first content-length wins", raw: "SEND\ncontent-length:2\ncontent-length:5\n\nab\x00",
		want: []*frame.Frame{fr("SEND", "ab", "content-length", "2", "content-length", "5")}},
	{desc: "no trimming", raw: "SEND\n k : v \n\n\x00",
		want: []*frame.Frame{fr("SEND", "", " k ", " v ")}},
	{desc: "empty value", raw: "SEND\nk:\n\n\x00",
		want: []*frame.Frame{fr("SEND", "", "k", "")}},
	// EOLs and heart-beats.
	{desc: "CRLF frame", raw: "SEND\r\ndestination:/q\r\ncontent-type:text/plain\r\n\r\nbody\r\n\x00",
		want: []*frame.Frame{fr("SEND", "body\r\n", "destination", "/q", "content-type", "text/plain")}},
	{desc: "only one CR is stripped", raw: "SEND\r\nk:v\r\r\n\r\n\x00",
		want: []*frame.Frame{fr("SEND", "", "k", "v\r")}},
	{desc: "heart-beats", raw: "\n\r\n\n",
		want: []*frame.Frame{nil, nil, nil}},
	{desc: "heart-beats between frames", raw: "\nRECEIPT\nreceipt-id:1\n\n\x00\n\r\nRECEIPT\nreceipt-id:2\n\n\x00\r\n",
		want: []*frame.Frame{nil, fr("RECEIPT", "", "receipt-id", "1"), nil, nil, fr("RECEIPT", "", "receipt-id", "2"), nil}},
	{desc: "back to back", raw: "SEND\ndestination:/a\n\nx\x00SEND\ndestination:/b\ncontent-length:1\n\ny\x00ACK\nid:3\n\n\x00",
		want: []*frame.Frame{fr("SEND", "x", "destination", "/a"), fr("SEND", "y", "destination", "/b", "content-length", "1"), fr("ACK", "", "id", "3")}},
	{desc: "no headers", raw: "DISCONNECT\n\n\x00", want: []*frame.Frame{fr("DISCONNECT", "")}},
	{desc: "command not validated", raw: "FOO\n\n\x00", want: []*frame.Frame{fr("FOO", "")}},
	{desc: "CR starting a command", raw: "\rX\n\n\x00", want: []*frame.Frame{fr("\rX", "")}},
	// Malformed frames.
	{desc: "no colon", raw: "SEND\ndestination\n\n\x00", err: ErrMalformed},
	{desc: "empty key", raw: "SEND\n:v\n\n\x00", err: ErrMalformed},
	{desc: "no NUL after content-length", raw: "SEND\ncontent-length:1\n\nab\x00", err: ErrMalformed},
	{desc: "content-length negative", raw: "SEND\ncontent-length:-1\n\n\x00", err: ErrBadContentLength},
	{desc: "content-length empty", raw: "SEND\ncontent-length:\n\n\x00", err: ErrBadContentLength},
	{desc: "content-length space", raw: "SEND\ncontent-length: 1\n\nx\x00", err: ErrBadContentLength},
	{desc: "content-length plus", raw: "SEND\ncontent-length:+1\n\nx\x00", err: ErrBadContentLength},
	{desc: "content-length hex", raw: "SEND\ncontent-length:0x1\n\nx\x00", err: ErrBadContentLength},
	{desc: "content-length huge", raw: "SEND\ncontent-length:99999999999999999999999999\n\n\x00", err: ErrBodyTooLarge},
	{desc: "content-length huge then junk", raw: "SEND\ncontent-length:99999999999999999999999999x\n\n\x00", err: ErrBadContentLength},
	{desc: "frame then bad frame", raw: "RECEIPT\nreceipt-id:1\n\n\x00SEND\nx\n\n\x00",
		want: []*frame.Frame{fr("RECEIPT", "", "receipt-id", "1")}, err: ErrMalformed},
	// Truncation: see also TestTruncated.
	{desc: "lone CR at end", raw: "\r", err: io.ErrUnexpectedEOF},
	{desc: "no NUL", raw: "SEND\n\nabc", err: io.ErrUnexpectedEOF},
}

// readAll reads frames until an error, which it returns unless it is io.EOF.
func readAll(r *Reader) ([]*frame.Frame, error) {
	var got []*frame.Frame
	for {
		f, err := r.Read()
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		got = append(got, f)
	}
}

// framesEqual reports whether a and b have the same command, header entries
// in order, and body (nil and empty being equal).
func framesEqual(a, b *frame.Frame) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Command != b.Command || !bytes.Equal(a.Body, b.Body) || a.Header.Len() != b.Header.Len() {
		return false
	}
	for i := 0; i < a.Header.Len(); i++ {
		ak, av := a.Header.GetAt(i)
		bk, bv := b.Header.GetAt(i)
		if ak != bk || av != bv {
			return false
		}
	}
	return true
}

// fmtFrame renders a frame for failure messages.
func fmtFrame(f *frame.Frame) string {
	if f == nil {
		return "<heart-beat>"
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%q{", f.Command)
	for i := 0; i < f.Header.Len(); i++ {
		k, v := f.Header.GetAt(i)
		fmt.Fprintf(&sb, "%q:%q ", k, v)
	}
	fmt.Fprintf(&sb, "body %q}", f.Body)
	return sb.String()
}

// checkFrames fails t unless got matches want and err matches wantErr.
func checkFrames(t *testing.T, got, want []*frame.Frame, err, wantErr error) {
	t.Helper()
	if !errors.Is(err, wantErr) {
		t.Errorf("error = %v, want %v", err, wantErr)
	}
	if len(got) != len(want) {
		t.Errorf("got %d results, want %d", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if !framesEqual(got[i], want[i]) {
			t.Errorf("result %d = %s, want %s", i, fmtFrame(got[i]), fmtFrame(want[i]))
		}
	}
}

// splitReaders wrap the input so that it arrives in pieces.
var splitReaders = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"whole", func(r io.Reader) io.Reader { return r }},
	{"OneByte", iotest.OneByteReader},
	{"Half", iotest.HalfReader},
	{"DataErr", iotest.DataErrReader},
}

func TestReadTable(t *testing.T) {
	for _, c := range readCases {
		for _, sr := range splitReaders {
			t.Run(c.desc+"/"+sr.name, func(t *testing.T) {
				r := NewReader(sr.wrap(strings.NewReader(c.raw)), testLimits)
				if c.version != 0 {
					r.SetVersion(c.version)
				}
				got, err := readAll(r)
				checkFrames(t, got, c.want, err, c.err)
			})
		}
	}
}

// TestTruncated cuts every well-formed case short at every byte: the reader
// must report io.ErrUnexpectedEOF unless the cut falls between frames.
func TestTruncated(t *testing.T) {
	for _, c := range readCases {
		if c.err != nil {
			continue
		}
		for n := range len(c.raw) {
			r := NewReader(iotest.HalfReader(strings.NewReader(c.raw[:n])), testLimits)
			r.SetVersion(cmp(c.version, V12))
			got, err := readAll(r)
			if err == nil {
				// Allowed only if the cut leaves whole frames and heart-beats.
				if !isPrefix(got, c.want) {
					t.Errorf("%s cut at %d: got %d frames, no error", c.desc, n, len(got))
				}
				continue
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%s cut at %d: error %v, want io.ErrUnexpectedEOF", c.desc, n, err)
			}
		}
	}
}

// isPrefix reports whether got are the first frames of want.
func isPrefix(got, want []*frame.Frame) bool {
	if len(got) > len(want) {
		return false
	}
	for i := range got {
		if !framesEqual(got[i], want[i]) {
			return false
		}
	}
	return true
}

// cmp returns v, or def if v is zero.
func cmp(v, def Version) Version {
	if v == 0 {
		return def
	}
	return v
}

func TestReadErrorPassesThrough(t *testing.T) {
	boom := errors.New("boom")
	r := NewReader(io.MultiReader(strings.NewReader("SEND\nk:v"), iotest.ErrReader(boom)), testLimits)
	if _, err := r.Read(); !errors.Is(err, boom) {
		t.Fatalf("mid-frame error = %v, want boom", err)
	}
	r = NewReader(iotest.ErrReader(boom), testLimits)
	if _, err := r.Read(); !errors.Is(err, boom) {
		t.Fatalf("error between frames = %v, want boom", err)
	}
}

func TestOnFrameStart(t *testing.T) {
	r := NewReader(strings.NewReader("\n\r\nRECEIPT\nreceipt-id:1\n\n\x00\nRECEIPT\n\n\x00"), testLimits)
	calls := 0
	r.OnFrameStart = func() { calls++ }
	got, err := readAll(r)
	if err != nil || len(got) != 5 {
		t.Fatalf("readAll = %d results, %v", len(got), err)
	}
	if calls != 2 {
		t.Fatalf("OnFrameStart called %d times, want 2 (heart-beats do not count)", calls)
	}
}

// TestOnFrameStartEarly checks that OnFrameStart runs when the command's
// first byte arrives, before the rest of the frame has.
func TestOnFrameStartEarly(t *testing.T) {
	pr, pw := io.Pipe()
	r := NewReader(pr, testLimits)
	started := make(chan struct{})
	r.OnFrameStart = func() { close(started) }
	done := make(chan error, 1)
	go func() {
		_, err := r.Read()
		done <- err
	}()
	if _, err := pw.Write([]byte("S")); err != nil {
		t.Fatal(err)
	}
	<-started
	if _, err := pw.Write([]byte("END\n\n\x00")); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestSetVersionConcurrent sets the version while Read waits for a frame,
// as the server does after CONNECT: the frame is decoded by the new rules.
func TestSetVersionConcurrent(t *testing.T) {
	pr, pw := io.Pipe()
	r := NewReader(pr, testLimits)
	type result struct {
		f   *frame.Frame
		err error
	}
	done := make(chan result, 1)
	go func() {
		f, err := r.Read()
		done <- result{f, err}
	}()
	r.SetVersion(V10)
	if _, err := pw.Write([]byte("SEND\nk:a\\tb\n\n\x00")); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil || res.f.Header.Get("k") != "a\\tb" {
		t.Fatalf("Read = %v, %v; want k:a\\tb unescaped", fmtFrame(res.f), res.err)
	}
}

func TestVersionString(t *testing.T) {
	for v, want := range map[Version]string{V10: "1.0", V11: "1.1", V12: "1.2", 13: "stomp.Version(13)"} {
		if got := v.String(); got != want {
			t.Errorf("Version(%d).String() = %q, want %q", int(v), got, want)
		}
	}
}

func TestNewReaderPanicsOnZeroLimits(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	NewReader(strings.NewReader(""), Limits{MaxLine: 1, MaxHeaders: 1})
}

// TestLineLimit reads command and header lines of MaxLine-1, MaxLine and
// MaxLine+1 bytes, with LF and CR LF, for limits below, at and above the
// bufio buffer size.
func TestLineLimit(t *testing.T) {
	for _, limit := range []int{1, 10, readerBufSize - 2, readerBufSize - 1, readerBufSize, readerBufSize + 1, 3 * readerBufSize} {
		lim := Limits{MaxLine: limit, MaxHeaders: 4, MaxBody: 16}
		for _, eol := range []string{"\n", "\r\n"} {
			for _, n := range []int{limit - 1, limit, limit + 1} {
				if n < 1 {
					continue
				}
				var want error
				if n > limit {
					want = ErrLineTooLong
				}
				cases := map[string]string{"command": strings.Repeat("C", n) + eol + eol + "\x00"}
				if n >= 2 && limit >= len("SEND") {
					cases["header"] = "SEND" + eol + "k:" + strings.Repeat("v", n-2) + eol + eol + "\x00"
				}
				for what, raw := range cases {
					for _, sr := range splitReaders {
						f, err := NewReader(sr.wrap(strings.NewReader(raw)), lim).Read()
						if !errors.Is(err, want) || (want == nil && f == nil) {
							t.Errorf("limit %d, %s of %d bytes, eol %q, %s: %v, want %v", limit, what, n, eol, sr.name, err, want)
						}
					}
				}
			}
		}
	}
}

func TestHeaderLimit(t *testing.T) {
	lim := Limits{MaxLine: 64, MaxHeaders: 3, MaxBody: 16}
	for n := 0; n <= 4; n++ {
		raw := "SEND\n" + strings.Repeat("k:v\n", n) + "\n\x00"
		f, err := NewReader(strings.NewReader(raw), lim).Read()
		if n <= 3 && (err != nil || f.Header.Len() != n) {
			t.Errorf("%d headers: %v", n, err)
		}
		if n > 3 && !errors.Is(err, ErrTooManyHeaders) {
			t.Errorf("%d headers: %v, want ErrTooManyHeaders", n, err)
		}
	}
}

// TestBodyLimit reads bodies of MaxBody-1, MaxBody and MaxBody+1 bytes, with
// and without content-length, for limits below and above the buffer sizes.
func TestBodyLimit(t *testing.T) {
	for _, limit := range []int{1, 100, readerBufSize, 2*readerBufSize + 7, bodyChunk + 3} {
		lim := Limits{MaxLine: 64, MaxHeaders: 4, MaxBody: limit}
		for _, n := range []int{limit - 1, limit, limit + 1} {
			var want error
			if n > limit {
				want = ErrBodyTooLarge
			}
			body := strings.Repeat("b", n)
			for _, withLength := range []bool{false, true} {
				raw := "SEND\n\n" + body + "\x00"
				if withLength {
					raw = fmt.Sprintf("SEND\ncontent-length:%d\n\n%s\x00", n, body)
				}
				for _, sr := range splitReaders {
					f, err := NewReader(sr.wrap(strings.NewReader(raw)), lim).Read()
					if !errors.Is(err, want) {
						t.Errorf("limit %d, body %d, content-length %v, %s: %v, want %v", limit, n, withLength, sr.name, err, want)
					}
					if err == nil && len(f.Body) != n {
						t.Errorf("limit %d, body %d: got %d bytes", limit, n, len(f.Body))
					}
				}
			}
		}
	}
}

// allocated returns the bytes allocated while fn runs.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// prodLimits are the server's defaults, for the allocation tests.
var prodLimits = Limits{MaxLine: 8192, MaxHeaders: 128, MaxBody: 8 << 20}

// TestHugeContentLength is STYLE.md trap 5: go-stomp allocates 3.8 GiB for
// this 60-byte frame.
func TestHugeContentLength(t *testing.T) {
	raw := []byte("SEND\ndestination:/queue/a\ncontent-length:4000000000\n\nhello\x00")
	var err error
	n := allocated(func() { _, err = NewReader(bytes.NewReader(raw), prodLimits).Read() })
	if !errors.Is(err, ErrBodyTooLarge) {
		t.Fatalf("error = %v, want ErrBodyTooLarge", err)
	}
	if n > 1<<20 {
		t.Fatalf("allocated %d bytes", n)
	}
	allocs := testing.AllocsPerRun(100, func() { _, _ = NewReader(bytes.NewReader(raw), prodLimits).Read() })
	t.Logf("%d bytes, %.0f allocations", n, allocs)
	if allocs > 20 {
		t.Fatalf("%.0f allocations", allocs)
	}
}

// TestStalledBody announces a body of MaxBody bytes and sends 10: the
// reader holds one chunk, not MaxBody.
func TestStalledBody(t *testing.T) {
	raw := []byte(fmt.Sprintf("SEND\ncontent-length:%d\n\n0123456789", prodLimits.MaxBody))
	var err error
	n := allocated(func() { _, err = NewReader(bytes.NewReader(raw), prodLimits).Read() })
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("error = %v, want io.ErrUnexpectedEOF", err)
	}
	if n > 2*bodyChunk {
		t.Fatalf("allocated %d bytes for 10 body bytes", n)
	}
}

// TestLongLine sends 1 MiB header and command lines, and a 1 MiB body
// without content-length: the reader stops soon after the limit.
func TestLongLine(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 1<<20)
	for what, raw := range map[string][]byte{
		"header":  append(append([]byte("SEND\nk:"), long...), "\n\n\x00"...),
		"command": append(long, "\n\n\x00"...),
	} {
		var err error
		src := bytes.NewReader(raw)
		n := allocated(func() { _, err = NewReader(src, prodLimits).Read() })
		if !errors.Is(err, ErrLineTooLong) {
			t.Fatalf("%s: error = %v, want ErrLineTooLong", what, err)
		}
		if n > 64<<10 {
			t.Fatalf("%s: allocated %d bytes", what, n)
		}
		if consumed := len(raw) - src.Len(); consumed > prodLimits.MaxLine+2*readerBufSize {
			t.Fatalf("%s: consumed %d bytes", what, consumed)
		}
		t.Logf("%s: %d bytes allocated", what, n)
	}
	lim := Limits{MaxLine: 64, MaxHeaders: 4, MaxBody: 1000}
	src := bytes.NewReader(append([]byte("SEND\n\n"), long...))
	if _, err := NewReader(src, lim).Read(); !errors.Is(err, ErrBodyTooLarge) {
		t.Fatalf("long body: %v", err)
	}
	if consumed := (1 << 20) - src.Len(); consumed > 1000+2*readerBufSize {
		t.Fatalf("long body: consumed %d bytes", consumed)
	}
}

// repeatReader returns buf over and over, forever.
type repeatReader struct {
	buf []byte
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	n := copy(p, r.buf[r.off:])
	r.off = (r.off + n) % len(r.buf)
	return n, nil
}

// BenchmarkReadSend reads 1 KiB SEND frames, with and without
// content-length, from a repeated buffer.
func BenchmarkReadSend(b *testing.B) {
	body := strings.Repeat("x", 1024)
	for _, withLength := range []bool{true, false} {
		raw := "SEND\ndestination:/queue/orders\ncontent-type:text/plain\nreceipt:r-123\n"
		if withLength {
			raw += "content-length:1024\n"
		}
		raw += "\n" + body + "\x00\n"
		b.Run(fmt.Sprintf("content-length=%v", withLength), func(b *testing.B) {
			r := NewReader(&repeatReader{buf: []byte(strings.Repeat(raw, 16))}, prodLimits)
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				f, err := r.Read()
				if err != nil || f == nil || len(f.Body) != 1024 {
					b.Fatalf("Read = %v, %v", f, err)
				}
				if _, err := r.Read(); err != nil { // the heart-beat after it
					b.Fatal(err)
				}
			}
		})
	}
}
