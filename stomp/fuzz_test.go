package stomp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/go-stomp/stomp/v3/frame"
)

// fuzzLimits are small, so that the fuzzer reaches every limit.
var fuzzLimits = Limits{MaxLine: 48, MaxHeaders: 6, MaxBody: 300}

// FuzzReader feeds arbitrary bytes to a Reader in every version and checks
// that it never panics, that every frame it returns obeys the limits, that
// every error it returns is one it documents, and that a returned frame
// encoded with AppendFrame (STOMP 1.2, escaped where the server would
// escape) reads back as the same frame.
//
// Run: go test -run XXX -fuzz FuzzReader -fuzztime 60s ./stomp/
func FuzzReader(f *testing.F) {
	for _, c := range readCases {
		f.Add([]byte(c.raw), uint8(cmp(c.version, V12)))
	}
	for _, c := range writeCases {
		f.Add([]byte(c.raw), uint8(cmp(c.version, V12)))
	}
	f.Add([]byte("SEND\ndestination:/queue/a\ncontent-length:4000000000\n\nhello\x00"), uint8(V12))
	f.Add([]byte("SEND\r\nk:"+strings.Repeat("v", 46)+"\r\n\r\n\x00"), uint8(V12))

	f.Fuzz(func(t *testing.T, data []byte, ver uint8) {
		v := []Version{V10, V11, V12}[int(ver)%3]
		r := NewReader(bytes.NewReader(data), fuzzLimits)
		r.SetVersion(v)
		got, err := readAll(r)
		if err != nil {
			checkFuzzError(t, err)
		}
		for _, fm := range got {
			if fm == nil {
				continue // heart-beat
			}
			checkFuzzLimits(t, fm)
			checkReencode(t, fm)
		}

		// The same bytes one at a time decode the same way.
		r = NewReader(iotest.OneByteReader(bytes.NewReader(data)), fuzzLimits)
		r.SetVersion(v)
		split, splitErr := readAll(r)
		if fmt.Sprint(err) != fmt.Sprint(splitErr) || len(split) != len(got) || !isPrefix(split, got) {
			t.Fatalf("one byte at a time: %d results, %v; whole: %d results, %v", len(split), splitErr, len(got), err)
		}
	})
}

// checkFuzzError fails t unless err is io.EOF, io.ErrUnexpectedEOF or wraps
// one of the package's sentinels.
func checkFuzzError(t *testing.T, err error) {
	t.Helper()
	for _, want := range []error{io.EOF, io.ErrUnexpectedEOF, ErrLineTooLong, ErrTooManyHeaders,
		ErrBodyTooLarge, ErrMalformed, ErrBadEscape, ErrBadContentLength} {
		if errors.Is(err, want) {
			return
		}
	}
	t.Fatalf("undocumented error %v", err)
}

// checkFuzzLimits fails t if fm holds more than fuzzLimits allow. Unescaping
// only shrinks a line, so the decoded key and value fit in MaxLine too.
func checkFuzzLimits(t *testing.T, fm *frame.Frame) {
	t.Helper()
	if len(fm.Command) == 0 || len(fm.Command) > fuzzLimits.MaxLine {
		t.Fatalf("command of %d bytes", len(fm.Command))
	}
	if fm.Header.Len() > fuzzLimits.MaxHeaders {
		t.Fatalf("%d headers", fm.Header.Len())
	}
	for i := 0; i < fm.Header.Len(); i++ {
		k, v := fm.Header.GetAt(i)
		if k == "" || len(k)+1+len(v) > fuzzLimits.MaxLine {
			t.Fatalf("header %q:%q", k, v)
		}
	}
	if len(fm.Body) > fuzzLimits.MaxBody {
		t.Fatalf("body of %d bytes", len(fm.Body))
	}
	if _, ok := fm.Header.Contains(frame.ContentLength); !ok && bytes.IndexByte(fm.Body, 0) >= 0 {
		t.Fatalf("NUL in a body without content-length")
	}
}

// checkReencode encodes fm as the server would for a STOMP 1.2 peer and
// reads it back.
func checkReencode(t *testing.T, fm *frame.Frame) {
	t.Helper()
	if strings.HasSuffix(fm.Command, "\r") {
		// Not a STOMP command; the server rejects it and never encodes one.
		return
	}
	escape := escapeFor(fm, V12)
	want := fm
	if !escape {
		// Unescaped, a CR cannot survive; AppendFrame writes a space.
		want = fm.Clone()
		want.Header = frame.NewHeader()
		for i := 0; i < fm.Header.Len(); i++ {
			k, v := fm.Header.GetAt(i)
			want.Header.Add(strings.ReplaceAll(k, "\r", " "), strings.ReplaceAll(v, "\r", " "))
		}
	}
	wire := AppendFrame(nil, fm, V12, escape)
	big := Limits{MaxLine: 4 * fuzzLimits.MaxLine, MaxHeaders: fuzzLimits.MaxHeaders, MaxBody: fuzzLimits.MaxBody}
	got, err := readAll(NewReader(bytes.NewReader(wire), big))
	if err != nil || len(got) != 1 || !framesEqual(got[0], want) {
		var g string
		if len(got) > 0 {
			g = fmtFrame(got[0])
		}
		t.Fatalf("re-encoded %s as %q, read back %s (%d frames), %v", fmtFrame(fm), wire, g, len(got), err)
	}
}
