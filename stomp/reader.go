package stomp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/go-stomp/stomp/v3/frame"
)

// This file is the bounded STOMP frame decoder. It reuses go-stomp's
// frame.Frame and frame.Header but not its reader, which allocates whatever
// content-length says and reads header lines of any length (STYLE.md,
// trap 5). Every byte this Reader buffers for one frame is bounded by Limits.

// Errors returned by Reader.Read. Each returned error wraps one of these
// sentinels (test with errors.Is); the server turns them into an ERROR frame
// and closes the connection. A connection closed in the middle of a frame
// yields io.ErrUnexpectedEOF, one closed between frames io.EOF.
var (
	// ErrLineTooLong reports a command or header line longer than
	// Limits.MaxLine bytes, not counting its EOL.
	ErrLineTooLong = errors.New("stomp: line too long")
	// ErrTooManyHeaders reports more than Limits.MaxHeaders header lines.
	ErrTooManyHeaders = errors.New("stomp: too many headers")
	// ErrBodyTooLarge reports a body, or a content-length, larger than
	// Limits.MaxBody bytes.
	ErrBodyTooLarge = errors.New("stomp: body too large")
	// ErrMalformed reports a frame that breaks the STOMP grammar: a header
	// line without a colon or with an empty name, or a body of
	// content-length bytes not followed by NUL.
	ErrMalformed = errors.New("stomp: malformed frame")
	// ErrBadEscape reports an undefined escape sequence in a header
	// (STOMP 1.2 "Value Encoding": "MUST be treated as fatal protocol
	// errors"), or a header ending in a lone backslash.
	ErrBadEscape = errors.New("stomp: bad escape sequence in header")
	// ErrBadContentLength reports a content-length header that is not a
	// non-negative decimal integer.
	ErrBadContentLength = errors.New("stomp: bad content-length")
)

// Limits bound what a Reader buffers for one frame. All must be > 0.
type Limits struct {
	MaxLine    int // command and header lines, bytes, excluding EOL (e.g. 8192)
	MaxHeaders int // header lines per frame (e.g. 128)
	MaxBody    int // body bytes (e.g. 8 << 20)
}

// Version is a negotiated STOMP version; it decides header escaping.
type Version int

// The STOMP versions. 1.0 has no header escaping, 1.1 escapes backslash,
// LF and colon, and 1.2 also CR.
const (
	V10 Version = 10
	V11 Version = 11
	V12 Version = 12
)

// String returns the version as it appears in accept-version and version
// headers: "1.0", "1.1" or "1.2".
func (v Version) String() string {
	switch v {
	case V10:
		return "1.0"
	case V11:
		return "1.1"
	case V12:
		return "1.2"
	}
	return "stomp.Version(" + strconv.Itoa(int(v)) + ")"
}

const (
	// readerBufSize is the size of the bufio.Reader under a Reader. Lines
	// longer than this are gathered in Reader.line, up to Limits.MaxLine.
	readerBufSize = 4096
	// bodyChunk is how much body a Reader allocates before the bytes have
	// arrived. Larger bodies grow as data comes in, so a peer that announces
	// a large content-length and then stalls holds little memory.
	bodyChunk = 64 << 10
)

// Reader decodes STOMP frames from a byte stream, buffering no more for one
// frame than its Limits allow. Read is not safe for concurrent use;
// SetVersion may be called from any goroutine.
//
// After Read returns an error other than a heart-beat's (nil, nil) the
// Reader's position in the stream is undefined: close the connection.
type Reader struct {
	// OnFrameStart, if set, is called when the first byte of a frame's
	// command arrives, before the rest of the frame is read. The server
	// uses it to bound how long one frame may take to arrive.
	OnFrameStart func()

	br  *bufio.Reader
	lim Limits
	// version holds a Version; SetVersion may run on another goroutine
	// than Read (the server's processor, after CONNECT).
	version atomic.Int32
	// line gathers a line that does not fit in br's buffer.
	line []byte
	// hdr gathers a frame's header keys and values before they are copied
	// into an exactly sized frame.Header.
	hdr []string
}

// NewReader returns a Reader that reads from r through its own
// bufio.Reader. It expects STOMP 1.2 escaping until SetVersion says
// otherwise. It panics if a field of lim is not positive: limits come from
// validated configuration, never from the wire.
func NewReader(r io.Reader, lim Limits) *Reader {
	if lim.MaxLine <= 0 || lim.MaxHeaders <= 0 || lim.MaxBody <= 0 {
		panic(fmt.Sprintf("stomp: NewReader: every limit must be > 0, got %+v", lim))
	}
	rd := &Reader{br: bufio.NewReaderSize(r, readerBufSize), lim: lim}
	rd.version.Store(int32(V12))
	return rd
}

// SetVersion sets the version whose header escaping rules Read applies:
// none for V10, backslash, LF and colon for V11, and CR as well for V12.
// The server calls it once the version is negotiated; the CONNECT or STOMP
// frame itself is never unescaped.
//
// It is safe to call while another goroutine is in Read. The new rules
// apply from the next frame whose command line Read finishes after the
// call; to be sure the frame after CONNECT is decoded with them, call
// SetVersion before the next Read begins.
func (r *Reader) SetVersion(v Version) { r.version.Store(int32(v)) }

// Read returns the next frame. A bare EOL between frames (a heart-beat)
// returns (nil, nil), once per EOL. Read returns io.EOF if the stream ends
// between frames and io.ErrUnexpectedEOF if it ends inside one; limit and
// grammar violations wrap the package's Err sentinels.
//
// The command is not validated here; the server does that.
func (r *Reader) Read() (*frame.Frame, error) {
	p, err := r.br.Peek(1)
	if err != nil {
		return nil, err // io.EOF here is a clean close between frames
	}
	switch p[0] {
	case '\n':
		_, _ = r.br.Discard(1)
		return nil, nil
	case '\r':
		p, err = r.br.Peek(2)
		if err != nil {
			return nil, noEOF(err) // a lone CR, then the end
		}
		if p[1] == '\n' {
			_, _ = r.br.Discard(2)
			return nil, nil
		}
	}
	if r.OnFrameStart != nil {
		r.OnFrameStart()
	}

	line, err := r.readLine()
	if err != nil {
		return nil, err
	}
	command := commandString(line)
	version := Version(r.version.Load())
	// STOMP 1.2 "Value Encoding": "The CONNECT and CONNECTED frames do not
	// escape the carriage return, line feed or colon octets in order to
	// remain backward compatible with STOMP 1.0"; STOMP is CONNECT's alias.
	unescape := version >= V11 && command != frame.CONNECT &&
		command != frame.STOMP && command != frame.CONNECTED

	hdr, err := r.readHeaders(unescape, version >= V12)
	if err != nil {
		return nil, err
	}
	f := &frame.Frame{Command: command, Header: frame.NewHeader(hdr...)}
	clear(hdr)

	if cl, ok := f.Header.Contains(frame.ContentLength); ok {
		n, err := parseContentLength(cl, r.lim.MaxBody)
		if err != nil {
			return nil, err
		}
		f.Body, err = r.readBodyN(n)
		if err != nil {
			return nil, err
		}
		return f, nil
	}
	if f.Body, err = r.readBodyNUL(); err != nil {
		return nil, err
	}
	return f, nil
}

// readHeaders reads header lines up to and including the blank line that
// ends them, and returns their keys and values in r.hdr. With unescape set
// it decodes STOMP 1.1 escapes, and \r as well if v12.
func (r *Reader) readHeaders(unescape, v12 bool) ([]string, error) {
	hdr := r.hdr[:0]
	for n := 0; ; n++ {
		line, err := r.readLine()
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			r.hdr = hdr
			return hdr, nil
		}
		if n == r.lim.MaxHeaders {
			return nil, fmt.Errorf("%w (limit %d)", ErrTooManyHeaders, r.lim.MaxHeaders)
		}
		i := bytes.IndexByte(line, ':')
		switch {
		case i < 0:
			return nil, fmt.Errorf("%w: header line without a colon", ErrMalformed)
		case i == 0:
			return nil, fmt.Errorf("%w: empty header name", ErrMalformed)
		}
		var key, value string
		if !unescape || bytes.IndexByte(line, '\\') < 0 {
			// One string for the whole line; key and value share it.
			s := string(line)
			key, value = s[:i], s[i+1:]
		} else {
			if key, err = unescapeHeader(line[:i], v12); err != nil {
				return nil, err
			}
			if value, err = unescapeHeader(line[i+1:], v12); err != nil {
				return nil, err
			}
		}
		hdr = append(hdr, key, value)
	}
}

// readLine returns the next line without its EOL (LF, or CR LF). The slice
// is valid until the next read. It fails with ErrLineTooLong once the line
// is known to exceed Limits.MaxLine, having buffered at most MaxLine+1
// bytes besides br's buffer.
func (r *Reader) readLine() ([]byte, error) {
	chunk, err := r.br.ReadSlice('\n')
	if err == nil {
		return r.trimEOL(chunk)
	}
	// MaxLine content bytes plus the CR of a CR LF may precede the LF.
	limit := r.lim.MaxLine + 1
	r.line = r.line[:0]
	for err == bufio.ErrBufferFull {
		if len(r.line)+len(chunk) > limit {
			return nil, r.errLineTooLong()
		}
		r.line = append(r.line, chunk...)
		chunk, err = r.br.ReadSlice('\n')
	}
	if err != nil {
		return nil, noEOF(err)
	}
	if len(r.line)+len(chunk) > limit+1 {
		return nil, r.errLineTooLong()
	}
	r.line = append(r.line, chunk...)
	return r.trimEOL(r.line)
}

// trimEOL strips the LF ending line and one CR before it, and checks the
// rest against Limits.MaxLine.
func (r *Reader) trimEOL(line []byte) ([]byte, error) {
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) > r.lim.MaxLine {
		return nil, r.errLineTooLong()
	}
	return line, nil
}

func (r *Reader) errLineTooLong() error {
	return fmt.Errorf("%w (limit %d bytes)", ErrLineTooLong, r.lim.MaxLine)
}

// readBodyN reads a body of n bytes, n <= Limits.MaxBody, and the NUL after
// it. Bodies over bodyChunk grow as their bytes arrive rather than being
// allocated whole from the content-length.
func (r *Reader) readBodyN(n int) ([]byte, error) {
	var body []byte
	if n > 0 {
		body = make([]byte, 0, min(n, bodyChunk))
		for len(body) < n {
			if len(body) == cap(body) {
				body = growBytes(body, min(cap(body), n-len(body)), n)
			}
			m, err := io.ReadFull(r.br, body[len(body):min(cap(body), n)])
			body = body[:len(body)+m]
			if err != nil {
				return nil, noEOF(err)
			}
		}
	}
	c, err := r.br.ReadByte()
	if err != nil {
		return nil, noEOF(err)
	}
	if c != 0 {
		return nil, fmt.Errorf("%w: no NUL after %d body bytes of content-length", ErrMalformed, n)
	}
	return body, nil
}

// readBodyNUL reads a body up to and including the first NUL, failing with
// ErrBodyTooLarge as soon as more than Limits.MaxBody bytes precede it.
func (r *Reader) readBodyNUL() ([]byte, error) {
	chunk, err := r.br.ReadSlice(0)
	if err == nil {
		if len(chunk)-1 > r.lim.MaxBody {
			return nil, r.errBodyTooLarge()
		}
		if len(chunk) == 1 {
			return nil, nil
		}
		return bytes.Clone(chunk[:len(chunk)-1]), nil
	}
	var body []byte
	for err == bufio.ErrBufferFull {
		if len(body)+len(chunk) > r.lim.MaxBody {
			return nil, r.errBodyTooLarge()
		}
		body = append(growBytes(body, len(chunk), r.lim.MaxBody), chunk...)
		chunk, err = r.br.ReadSlice(0)
	}
	if err != nil {
		return nil, noEOF(err)
	}
	chunk = chunk[:len(chunk)-1]
	if len(body)+len(chunk) > r.lim.MaxBody {
		return nil, r.errBodyTooLarge()
	}
	return append(growBytes(body, len(chunk), r.lim.MaxBody), chunk...), nil
}

func (r *Reader) errBodyTooLarge() error {
	return fmt.Errorf("%w (limit %d bytes)", ErrBodyTooLarge, r.lim.MaxBody)
}

// growBytes returns b with room for at least k more bytes. It doubles the
// capacity but, unlike append, never past limit (unless len(b)+k needs it),
// so a body never holds more memory than its limit.
func growBytes(b []byte, k, limit int) []byte {
	if cap(b)-len(b) >= k {
		return b
	}
	nb := make([]byte, len(b), max(len(b)+k, min(2*cap(b), limit)))
	copy(nb, b)
	return nb
}

// noEOF turns io.EOF inside a frame into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseContentLength parses a content-length value: one or more decimal
// digits and nothing else. A well-formed value over limit is ErrBodyTooLarge,
// found without allocating the body.
func parseContentLength(s string, limit int) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("%w: empty", ErrBadContentLength)
	}
	n, over := 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: %.32q", ErrBadContentLength, s)
		}
		if !over {
			if n > (math.MaxInt-9)/10 {
				over = true
				continue
			}
			n = n*10 + int(c-'0')
			over = n > limit
		}
	}
	if over {
		return 0, fmt.Errorf("%w: content-length %.32s over the limit of %d bytes", ErrBodyTooLarge, s, limit)
	}
	return n, nil
}

// unescapeHeader decodes a STOMP 1.1 or 1.2 header key or value: \\ \n \c,
// and \r when v12. Any other sequence, or a trailing backslash, is
// ErrBadEscape.
func unescapeHeader(b []byte, v12 bool) (string, error) {
	i := bytes.IndexByte(b, '\\')
	if i < 0 {
		return string(b), nil
	}
	var sb strings.Builder
	sb.Grow(len(b) - 1)
	sb.Write(b[:i])
	for ; i < len(b); i++ {
		c := b[i]
		if c != '\\' {
			sb.WriteByte(c)
			continue
		}
		if i++; i == len(b) {
			return "", fmt.Errorf("%w: trailing backslash", ErrBadEscape)
		}
		switch b[i] {
		case '\\':
			sb.WriteByte('\\')
		case 'n':
			sb.WriteByte('\n')
		case 'c':
			sb.WriteByte(':')
		case 'r':
			if !v12 {
				return "", fmt.Errorf("%w: \\r is STOMP 1.2 only", ErrBadEscape)
			}
			sb.WriteByte('\r')
		default:
			return "", fmt.Errorf("%w: %q", ErrBadEscape, b[i-1:i+1])
		}
	}
	return sb.String(), nil
}

// commandString converts a command line to a string, without allocating
// for the commands STOMP defines.
func commandString(line []byte) string {
	switch string(line) {
	case frame.SEND:
		return frame.SEND
	case frame.ACK:
		return frame.ACK
	case frame.NACK:
		return frame.NACK
	case frame.SUBSCRIBE:
		return frame.SUBSCRIBE
	case frame.UNSUBSCRIBE:
		return frame.UNSUBSCRIBE
	case frame.BEGIN:
		return frame.BEGIN
	case frame.COMMIT:
		return frame.COMMIT
	case frame.ABORT:
		return frame.ABORT
	case frame.CONNECT:
		return frame.CONNECT
	case frame.STOMP:
		return frame.STOMP
	case frame.DISCONNECT:
		return frame.DISCONNECT
	case frame.CONNECTED:
		return frame.CONNECTED
	case frame.MESSAGE:
		return frame.MESSAGE
	case frame.RECEIPT:
		return frame.RECEIPT
	case frame.ERROR:
		return frame.ERROR
	}
	return string(line)
}
