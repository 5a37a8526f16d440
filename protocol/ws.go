package protocol

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"
)

// WSMessages says which WebSocket message types a WebSocket endpoint sends
// and accepts.
type WSMessages int

const (
	// WSBinary sends every Write as a binary message and closes the
	// connection (status 1003) on a text message, as MQTT requires
	// [MQTT-6.0.0-1].
	WSBinary WSMessages = iota + 1
	// WSText sends a Write as a text message when it is valid UTF-8 and as a
	// binary message otherwise (browsers close a connection on a text
	// message that is not UTF-8), and accepts both. For STOMP.
	WSText
)

// WSConfig configures one WebSocket endpoint (a WSListener).
type WSConfig struct {
	// Subprotocols are the subprotocols the endpoint speaks. Of those a
	// client offers, the first it lists that is here is chosen. A client
	// that offers only others is refused with 400.
	Subprotocols []string
	// RequireSubprotocol refuses (400) a client that offers no subprotocol.
	RequireSubprotocol bool
	// Messages is WSBinary or WSText.
	Messages WSMessages
	// MaxMessageSize bounds one message from a client; a longer one closes
	// the connection with status 1009. A message is streamed, never
	// buffered whole: the part of a longer one read before the limit was
	// seen may already have reached the protocol server.
	MaxMessageSize int64
	// OriginPatterns lists the browser origins allowed besides the
	// request's own host: path.Match patterns on the origin's host
	// ("example.com", "*.example.com"), or on "scheme://host" when the
	// pattern has "://". A request with no Origin header (not from a
	// browser) is always allowed; any other origin is refused with 403.
	OriginPatterns []string
	// CloseTimeout bounds the closing handshake of a connection: sending
	// the close frame and waiting for the client's.
	CloseTimeout time.Duration
}

// DefaultWSCloseTimeout is the CloseTimeout when none is given.
const DefaultWSCloseTimeout = time.Second

// Validate reports the first setting out of range.
func (c *WSConfig) Validate() error {
	if c.Messages != WSBinary && c.Messages != WSText {
		return fmt.Errorf("websocket: unknown message mode %d", c.Messages)
	}
	if c.MaxMessageSize < 1 {
		return fmt.Errorf("websocket: max message size must be positive, got %d", c.MaxMessageSize)
	}
	if c.RequireSubprotocol && len(c.Subprotocols) == 0 {
		return errors.New("websocket: a subprotocol is required but none is accepted")
	}
	for _, p := range c.OriginPatterns {
		if err := ValidateOriginPattern(p); err != nil {
			return err
		}
	}
	return nil
}

// ValidateOriginPattern reports whether p is a usable origin pattern.
func ValidateOriginPattern(p string) error {
	if p == "" {
		return errors.New("websocket: empty origin pattern")
	}
	if _, err := path.Match(strings.ToLower(p), ""); err != nil {
		return fmt.Errorf("websocket: bad origin pattern %q", p)
	}
	return nil
}

// WSListener is a net.Listener fed by an http.Handler: each WebSocket
// handshake it accepts (ServeHTTP) becomes a net.Conn that Accept returns.
// A protocol server's Serve(ln) thus serves WebSocket clients unchanged.
//
// ServeHTTP runs, in the HTTP server's goroutine for the request, for as
// long as the connection lives, and a second goroutine moves the client's
// messages into the connection's read stream; Wait joins both for every
// connection. Close stops Accept and refuses further handshakes with 503;
// the connections already accepted belong to the server that accepted
// them and end when it closes them.
type WSListener struct {
	cfg  WSConfig
	log  zerolog.Logger
	addr net.Addr

	conns chan *wsConn
	done  chan struct{} // closed by Close

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // one per ServeHTTP past the closed check
}

// NewWSListener returns a listener for the endpoint cfg describes. addr is
// what Addr reports (nil: "websocket").
func NewWSListener(cfg WSConfig, addr net.Addr, log zerolog.Logger) (*WSListener, error) {
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = DefaultWSCloseTimeout
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if addr == nil {
		addr = wsAddr("websocket")
	}
	return &WSListener{
		cfg:   cfg,
		log:   log,
		addr:  addr,
		conns: make(chan *wsConn),
		done:  make(chan struct{}),
	}, nil
}

// Accept returns the next WebSocket connection, or net.ErrClosed after
// Close.
func (l *WSListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: "websocket", Addr: l.addr, Err: net.ErrClosed}
	}
}

// Close stops Accept and refuses further handshakes. Connections already
// accepted stay open.
func (l *WSListener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		close(l.done)
	}
	return nil
}

// Addr returns the address given to NewWSListener.
func (l *WSListener) Addr() net.Addr { return l.addr }

// Wait waits until every handshake ServeHTTP accepted has ended: call it
// after Close and after the server that accepted the connections has
// closed them. Each ends within CloseTimeout of its Close.
func (l *WSListener) Wait() { l.wg.Wait() }

// enter counts a ServeHTTP in; false once the listener is closed.
func (l *WSListener) enter() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.wg.Add(1)
	return true
}

// ServeHTTP performs the WebSocket handshake, hands the connection to
// Accept and returns once it has ended.
func (l *WSListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !l.enter() {
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	defer l.wg.Done()
	if !headerHasToken(r.Header, "Upgrade", "websocket") {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "this is a WebSocket endpoint", http.StatusUpgradeRequired)
		return
	}
	sub, ok := l.subprotocol(r)
	if !ok {
		msg := "no supported WebSocket subprotocol; want one of: " + strings.Join(l.cfg.Subprotocols, ", ")
		l.log.Info().Str("remote", r.RemoteAddr).Strs("offered", offeredSubprotocols(r)).Msg("websocket handshake refused: " + msg)
		http.Error(w, msg, http.StatusBadRequest)
		return
	}
	opts := &websocket.AcceptOptions{OriginPatterns: l.cfg.OriginPatterns}
	if sub != "" {
		opts.Subprotocols = []string{sub}
	}
	hw := &hijackCapture{ResponseWriter: w}
	ws, err := websocket.Accept(hw, r, opts)
	if err != nil {
		// Accept has written the response (403 for a refused origin).
		l.log.Info().Err(err).Str("remote", r.RemoteAddr).Str("origin", r.Header.Get("Origin")).Msg("websocket handshake refused")
		return
	}
	c := newWSConn(ws, hw.conn, l)
	go c.pump()
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
	c.serve()
}

// subprotocol picks the subprotocol: the first the client offers that the
// endpoint speaks. ok is false if the client must be refused.
func (l *WSListener) subprotocol(r *http.Request) (sub string, ok bool) {
	offered := offeredSubprotocols(r)
	if len(offered) == 0 {
		return "", !l.cfg.RequireSubprotocol
	}
	for _, o := range offered {
		for _, s := range l.cfg.Subprotocols {
			if strings.EqualFold(o, s) {
				return o, true
			}
		}
	}
	return "", false
}

func offeredSubprotocols(r *http.Request) []string {
	var out []string
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// hijackCapture keeps the connection the WebSocket library hijacks, so
// that its deadlines can bound writes and the closing handshake.
type hijackCapture struct {
	http.ResponseWriter
	conn net.Conn
}

func (h *hijackCapture) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err == nil {
		h.conn = nc
	}
	return nc, brw, err
}

// wsAddr is the Addr of a WSListener given none.
type wsAddr string

func (a wsAddr) Network() string { return "websocket" }
func (a wsAddr) String() string  { return string(a) }

// wsReadBufSize is the size of the buffer a connection holds while it
// moves one message into its read stream.
const wsReadBufSize = 8 << 10

var wsReadBufs = sync.Pool{New: func() any { b := make([]byte, wsReadBufSize); return &b }}

// wsConn is a net.Conn over a WebSocket connection.
//
// Reads see the payloads of the client's messages as one byte stream, so a
// protocol frame may be split across messages and a message may carry
// several frames. The pump goroutine moves them through a synchronous
// in-memory pipe (net.Pipe), which gives reads their deadlines: a read
// that times out leaves the connection usable, as on TCP. Each Write is one
// message; the write deadline is the hijacked connection's, set only while
// a Write is in progress (so that it never cuts off a pong the library
// sends between writes). A Write that times out leaves the connection
// unusable, its message cut off; the protocol servers close it then, as
// they do on TCP.
//
// Close returns at once; the closing handshake is done by serve, in the
// handler's goroutine, bounded by CloseTimeout.
type wsConn struct {
	ws       *websocket.Conn
	raw      net.Conn // the hijacked connection under ws
	l        *WSListener
	pr, pw   net.Conn // read stream: pump writes pw, Read reads pr
	closing  chan struct{}
	pumpDone chan struct{}
	once     sync.Once

	wmu sync.Mutex // serializes Writes

	mu      sync.Mutex // guards the fields below
	closed  bool
	writing bool      // a Write is in progress
	wdl     time.Time // the write deadline
	readErr error     // why the read stream ended, nil for a clean end
	status  websocket.StatusCode
	reason  string
}

func newWSConn(ws *websocket.Conn, raw net.Conn, l *WSListener) *wsConn {
	// The pump enforces MaxMessageSize itself, so that no byte past it is
	// passed on; the library's own limit, which lets one more through, is
	// a backstop.
	ws.SetReadLimit(l.cfg.MaxMessageSize + 1)
	// The HTTP server may have left a deadline on the connection.
	_ = raw.SetDeadline(time.Time{})
	pr, pw := net.Pipe()
	return &wsConn{
		ws: ws, raw: raw, l: l, pr: pr, pw: pw,
		closing:  make(chan struct{}),
		pumpDone: make(chan struct{}),
		status:   websocket.StatusNormalClosure,
	}
}

// errTextMessage ends the read stream of a WSBinary connection.
var errTextMessage = errors.New("websocket: text message on a binary-only endpoint")

// pump moves the client's message payloads into the read stream until the
// connection ends.
func (c *wsConn) pump() {
	defer close(c.pumpDone)
	err := c.pumpMessages()
	c.mu.Lock()
	if !isCleanWSEnd(err) {
		c.readErr = err
	}
	c.mu.Unlock()
	c.pw.Close() // Read now returns io.EOF, or readErr
}

func (c *wsConn) pumpMessages() error {
	for {
		typ, r, err := c.ws.Reader(context.Background())
		if err != nil {
			return err
		}
		if typ != websocket.MessageBinary && c.l.cfg.Messages == WSBinary {
			c.setStatus(websocket.StatusUnsupportedData, "binary messages only")
			return errTextMessage
		}
		if err := c.pumpMessage(r); err != nil {
			return err
		}
	}
}

// errStreamClosed ends the pump when Close has closed the read stream.
var errStreamClosed = errors.New("websocket: read stream closed")

// pumpMessage moves one message into the read stream. It holds a buffer
// only while a message is coming in: an idle connection holds none.
func (c *wsConn) pumpMessage(r io.Reader) error {
	bp := wsReadBufs.Get().(*[]byte)
	defer wsReadBufs.Put(bp)
	buf := *bp
	var size int64
	for {
		n, err := r.Read(buf)
		if size += int64(n); size > c.l.cfg.MaxMessageSize {
			// Nothing past the limit reaches the protocol server.
			c.setStatus(websocket.StatusMessageTooBig, "message too big")
			return fmt.Errorf("%w: over %d bytes", websocket.ErrMessageTooBig, c.l.cfg.MaxMessageSize)
		}
		if n > 0 {
			if _, werr := c.pw.Write(buf[:n]); werr != nil {
				return errStreamClosed
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// isCleanWSEnd reports whether a read error is the connection ending
// normally: a close frame with status 1000 or 1001, a local close, or the
// client going away.
func isCleanWSEnd(err error) bool {
	if err == nil || errors.Is(err, errStreamClosed) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		return true
	}
	switch websocket.CloseStatus(err) {
	case websocket.StatusNormalClosure, websocket.StatusGoingAway, websocket.StatusNoStatusRcvd:
		return true
	}
	return false
}

func (c *wsConn) setStatus(code websocket.StatusCode, reason string) {
	c.mu.Lock()
	c.status, c.reason = code, reason
	c.mu.Unlock()
}

// serve waits for Close, then does the closing handshake within
// CloseTimeout and waits for the pump. When the client's stream ends first
// (a close frame, a broken connection, a message too big), the protocol
// server sees that in Read and closes the connection, after a last ERROR
// frame if it has one to send.
func (c *wsConn) serve() {
	<-c.closing
	c.mu.Lock()
	c.closed = true
	code, reason := c.status, c.reason
	_ = c.raw.SetDeadline(time.Now().Add(c.l.cfg.CloseTimeout))
	c.mu.Unlock()
	if code == websocket.StatusNormalClosure {
		select {
		case <-c.l.done:
			code = websocket.StatusGoingAway // the server is shutting down
		default:
		}
	}
	// An error means the client is gone or too slow; either way ws is
	// closed now, so the pump's next read fails and it ends.
	_ = c.ws.Close(code, reason)
	<-c.pumpDone
}

// Read reads the stream of the client's message payloads.
func (c *wsConn) Read(p []byte) (int, error) {
	n, err := c.pr.Read(p)
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		c.mu.Lock()
		rerr := c.readErr
		c.mu.Unlock()
		if rerr != nil {
			err = c.opError("read", rerr)
		}
	case errors.Is(err, io.ErrClosedPipe):
		err = c.opError("read", net.ErrClosed)
	default:
		err = c.opError("read", err) // a deadline
	}
	return n, err
}

// Write sends p as one message.
func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, c.opError("write", net.ErrClosed)
	}
	c.writing = true
	_ = c.raw.SetWriteDeadline(c.wdl)
	c.mu.Unlock()

	typ := websocket.MessageBinary
	if c.l.cfg.Messages == WSText && utf8.Valid(p) {
		typ = websocket.MessageText
	}
	err := c.ws.Write(context.Background(), typ, p)

	c.mu.Lock()
	c.writing = false
	if !c.closed {
		_ = c.raw.SetWriteDeadline(time.Time{})
	}
	c.mu.Unlock()
	if err != nil {
		return 0, c.opError("write", err)
	}
	return len(p), nil
}

// Close ends the connection: reads and writes fail from now on, and the
// closing handshake runs in the background (serve).
func (c *wsConn) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.pr.Close()
		close(c.closing)
	})
	return nil
}

func (c *wsConn) LocalAddr() net.Addr  { return c.raw.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

func (c *wsConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *wsConn) SetReadDeadline(t time.Time) error {
	if err := c.pr.SetReadDeadline(t); err != nil {
		select {
		case <-c.closing:
			return c.opError("set deadline", net.ErrClosed)
		default:
			// The stream has ended (the pipe refuses deadlines then); the
			// next Read says how.
		}
	}
	return nil
}

func (c *wsConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return c.opError("set deadline", net.ErrClosed)
	}
	c.wdl = t
	if c.writing {
		_ = c.raw.SetWriteDeadline(t)
	}
	return nil
}

func (c *wsConn) opError(op string, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// net.OpError.Timeout looks at its Err only, not at what it wraps.
		err = os.ErrDeadlineExceeded
	}
	return &net.OpError{Op: op, Net: "websocket", Source: c.raw.LocalAddr(), Addr: c.raw.RemoteAddr(), Err: err}
}
