package stomp

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-stomp/stomp/v3/frame"
	"github.com/rs/zerolog"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/protocol"
)

// stateFunc handles one frame in the connection's current state.
type stateFunc func(c *conn, f *frame.Frame) error

// protoError is a client error: it is answered with an ERROR frame whose
// message header is msg, and the connection is closed.
type protoError struct {
	msg    string
	detail string
	frame  *frame.Frame // the offending frame, for its receipt
}

func (e *protoError) Error() string {
	if e.detail != "" {
		return e.msg + ": " + e.detail
	}
	return e.msg
}

func errorf(f *frame.Frame, msg string, args ...any) *protoError {
	return &protoError{msg: fmt.Sprintf(msg, args...), frame: f}
}

// conn is one client connection.
type conn struct {
	s   *Server
	nc  net.Conn
	dc  *deadlineConn
	id  string
	log zerolog.Logger
	r   *Reader
	out *outbox

	in   chan *frame.Frame // reader -> processor
	done chan struct{}     // closed when the connection is being torn down
	once sync.Once
	// ver is the negotiated Version: set by the processor, read by the
	// writer (escaping) and the reader (its ERRORs) as well.
	ver atomic.Int32

	// Owned by the processor goroutine.
	state     stateFunc
	user      string
	ident     *protocol.Identity // nil without Config.Auth: everything allowed
	release   func()             // the connection's Limiter slot, once CONNECTed
	clientID  string
	subs      map[string]*subscription // by the client's subscription id
	subNums   map[uint64]*subscription // by the number in ack ids
	nextSub   uint64
	txns      map[string]*txn
	temps     map[string]string // temp-queue name -> engine queue
	pending   []pendingSend     // SENDs waiting to be committed together
	connected bool
	closing   bool

	info connInfo // what operators see of it (admin.go)
}

func newConn(s *Server, nc net.Conn) *conn {
	id := strconv.FormatUint(s.nextConn.Add(1), 10)
	c := &conn{
		s:       s,
		nc:      nc,
		id:      id,
		log:     s.log.With().Str("conn", id).Str("remote", nc.RemoteAddr().String()).Logger(),
		in:      make(chan *frame.Frame, 64),
		done:    make(chan struct{}),
		state:   stateConnecting,
		subs:    make(map[string]*subscription),
		subNums: make(map[uint64]*subscription),
		txns:    make(map[string]*txn),
		temps:   make(map[string]string),
	}
	c.ver.Store(int32(V12))
	c.dc = &deadlineConn{Conn: nc, frameTimeout: s.cfg.FrameTimeout, until: time.Now().Add(s.cfg.ConnectTimeout)}
	c.r = NewReader(c.dc, s.cfg.Limits)
	c.r.OnFrameStart = c.dc.frameStarted
	c.out = newOutbox(c)
	return c
}

// run serves the connection: it starts the writer and reader and runs the
// processor in the calling goroutine, then tears everything down.
func (c *conn) run() {
	defer c.s.forget(c)
	var wg sync.WaitGroup
	wg.Add(2)
	written := make(chan struct{})
	go func() { defer wg.Done(); defer close(written); c.out.run() }()
	go func() { defer wg.Done(); c.readLoop() }()
	c.process()
	c.teardown()
	if c.release != nil {
		c.release()
	}
	// The reader may have queued an ERROR (bad frame, timeout) just before
	// it stopped: let the writer send what is queued and close, rather than
	// closing the socket under it, but not for longer than flushTimeout.
	c.out.control(nil, true)
	t := time.NewTimer(flushTimeout)
	select {
	case <-written:
	case <-t.C:
	case <-c.done:
	}
	t.Stop()
	c.shutdown()
	wg.Wait()
}

// flushTimeout bounds how long a closing connection waits for its last
// frames to be written.
const flushTimeout = 2 * time.Second

func (c *conn) version() Version { return Version(c.ver.Load()) }

// shutdown closes the socket, which ends the reader and writer.
func (c *conn) shutdown() {
	c.once.Do(func() {
		close(c.done)
		c.nc.Close()
	})
}

// readLoop parses frames and hands them to the processor. A read error
// ends the connection; a protocol error is reported once with an ERROR.
func (c *conn) readLoop() {
	defer close(c.in)
	defer func() {
		if p := recover(); p != nil {
			c.log.Error().Interface("panic", p).Msg("reader panic; connection closed")
		}
	}()
	first := true
	for {
		f, err := c.r.Read()
		if err != nil {
			c.readError(err)
			return
		}
		c.dc.frameDone()
		if f == nil {
			continue // heart-beat
		}
		if first {
			// The reader must parse the frames after CONNECT with the
			// negotiated version's escaping. It sets it itself, before it
			// reads on: a client may pipeline frames behind its CONNECT, and
			// the processor's negotiation (the same function, the same
			// answer) may not have run yet.
			first = false
			if f.Command == frame.CONNECT || f.Command == frame.STOMP {
				if v, ok := negotiate(f.Header.Get(frame.AcceptVersion)); ok {
					c.r.SetVersion(v)
				}
			}
		}
		select {
		case c.in <- f:
		case <-c.done:
			return
		}
	}
}

func (c *conn) readError(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		// The client left, or we closed the socket.
	case errors.As(err, &ne) && ne.Timeout():
		msg := "heart-beat timeout: nothing received in time"
		if c.dc.inFrame() {
			msg = "frame timeout: frame not completed in time"
		} else if c.dc.connecting() {
			msg = "connect timeout: no CONNECT frame in time"
		}
		c.log.Info().Msg(msg)
		c.out.error(&protoError{msg: msg}, c.version())
	case errors.Is(err, io.ErrUnexpectedEOF):
		c.log.Info().Msg("connection closed in the middle of a frame")
	default:
		c.log.Info().Err(err).Msg("bad frame")
		// The message header says why: clients such as go-stomp show only it.
		c.out.error(&protoError{msg: "malformed frame: " + strings.TrimPrefix(err.Error(), "stomp: ")}, c.version())
	}
}

// process applies frames in order until the reader stops or a frame fails.
func (c *conn) process() {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error().Interface("panic", p).Msg("processor panic; connection closed")
			c.out.error(&protoError{msg: "internal error"}, c.version())
		}
	}()
	for f := range c.in {
		if c.closing {
			continue
		}
		var err error
		if f.Command == frame.SEND && c.connected && f.Header.Get(frame.Transaction) == "" {
			err = c.queueSend(f)
			if err == nil && (len(c.in) == 0 || len(c.pending) >= maxPipelined) {
				err = c.flushSends()
			}
		} else {
			if err = c.flushSends(); err == nil {
				err = c.state(c, f)
			}
		}
		if err != nil {
			c.fail(err)
		}
	}
	if err := c.flushSends(); err != nil {
		c.fail(err)
	}
}

// fail reports err to the client and closes the connection once the ERROR
// is written.
func (c *conn) fail(err error) {
	c.closing = true
	var pe *protoError
	if !errors.As(err, &pe) {
		c.log.Error().Err(err).Msg("server error")
		pe = &protoError{msg: "server error", detail: err.Error()}
	} else {
		c.log.Info().Str("error", pe.Error()).Msg("client error")
	}
	c.out.error(pe, c.version())
}

// teardown releases what the connection holds in the engine: consumers
// (their unacked messages go back), topic subscriptions, temporary queues,
// open transactions.
func (c *conn) teardown() {
	for _, sub := range c.subs {
		sub.close()
	}
	for _, q := range c.temps {
		if err := c.s.b.DeleteQueue(q); err != nil && !errors.Is(err, engine.ErrNoQueue) && !errors.Is(err, engine.ErrClosed) {
			c.log.Warn().Err(err).Str("queue", q).Msg("delete temporary queue")
		}
	}
	c.txns = nil
}

// deadlineConn sets a read deadline before every read: the heart-beat
// interval (plus grace) while idle, never later than FrameTimeout after a
// frame started, and before CONNECT the connect timeout.
type deadlineConn struct {
	net.Conn
	mu           sync.Mutex
	idle         time.Duration // 0: no idle limit
	until        time.Time     // fixed deadline (connect timeout), zero once connected
	frameTimeout time.Duration
	frameStart   time.Time
}

func (d *deadlineConn) Read(p []byte) (int, error) {
	d.mu.Lock()
	var dl time.Time
	now := time.Now()
	if !d.until.IsZero() {
		dl = d.until
	} else if d.idle > 0 {
		dl = now.Add(d.idle)
	}
	if !d.frameStart.IsZero() {
		if fdl := d.frameStart.Add(d.frameTimeout); dl.IsZero() || fdl.Before(dl) {
			dl = fdl
		}
	}
	d.mu.Unlock()
	if err := d.Conn.SetReadDeadline(dl); err != nil {
		return 0, err
	}
	return d.Conn.Read(p)
}

func (d *deadlineConn) frameStarted() {
	d.mu.Lock()
	d.frameStart = time.Now()
	d.mu.Unlock()
}

func (d *deadlineConn) frameDone() {
	d.mu.Lock()
	d.frameStart = time.Time{}
	d.mu.Unlock()
}

func (d *deadlineConn) inFrame() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.frameStart.IsZero()
}

func (d *deadlineConn) connecting() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.until.IsZero()
}

// connected switches from the connect timeout to heart-beat enforcement.
// The reader is usually blocked in a Read whose deadline is still the
// connect timeout, so the socket's deadline is moved now: otherwise a
// silent client is caught only at the connect timeout, and a client that
// negotiated no heart-beats is cut off there while idle.
func (d *deadlineConn) connected(idle time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.until = time.Time{}
	d.idle = idle
	if !d.frameStart.IsZero() {
		return // the next Read sets the frame's deadline
	}
	var dl time.Time
	if idle > 0 {
		dl = time.Now().Add(idle)
	}
	_ = d.Conn.SetReadDeadline(dl) // a closed socket fails its Read anyway
}

// negotiate picks the highest version both sides speak.
func negotiate(accept string) (Version, bool) {
	if accept == "" {
		return V10, true
	}
	best := Version(0)
	for _, v := range strings.Split(accept, ",") {
		switch strings.TrimSpace(v) {
		case "1.0":
			best = max(best, V10)
		case "1.1":
			best = max(best, V11)
		case "1.2":
			best = max(best, V12)
		}
	}
	return best, best != 0
}

// parseHeartBeat reads "cx,cy" in milliseconds.
func parseHeartBeat(h string) (cx, cy time.Duration, ok bool) {
	if h == "" {
		return 0, 0, true
	}
	a, b, found := strings.Cut(h, ",")
	if !found {
		return 0, 0, false
	}
	x, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 31)
	y, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 31)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return time.Duration(x) * time.Millisecond, time.Duration(y) * time.Millisecond, true
}

// stateConnecting accepts only CONNECT or STOMP.
func stateConnecting(c *conn, f *frame.Frame) error {
	if f.Command != frame.CONNECT && f.Command != frame.STOMP {
		return errorf(f, "expected CONNECT or STOMP frame, got %q", truncate(f.Command))
	}
	v, ok := negotiate(f.Header.Get(frame.AcceptVersion))
	if !ok {
		pe := errorf(f, "supported protocol versions are 1.0 1.1 1.2")
		return pe
	}
	c.ver.Store(int32(v)) // the reader has set its own version (readLoop)
	cx, cy, ok := parseHeartBeat(f.Header.Get(frame.HeartBeat))
	if !ok && v >= V11 {
		return errorf(f, "bad heart-beat header %q", truncate(f.Header.Get(frame.HeartBeat)))
	}
	release, err := c.s.cfg.Limiter.Admit(c.nc.RemoteAddr())
	if err != nil {
		c.log.Info().Err(err).Msg("connection refused")
		return errorf(f, "%v", err)
	}
	c.release = release
	user := f.Header.Get(frame.Login)
	c.clientID = f.Header.Get("client-id")
	if auth := c.s.cfg.Auth; auth != nil {
		pass, _ := f.Header.Contains(frame.Passcode)
		client := c.clientID
		if client == "" {
			client = c.id
		}
		id, err := auth.Authenticate(protocol.Credentials{
			Remote: c.nc.RemoteAddr(), User: user, Password: []byte(pass),
			CertUser: protocol.CertUser(c.nc), Client: client,
		})
		if err != nil {
			c.log.Info().Str("login", user).Err(err).Msg("authentication failed")
			return errorf(f, "authentication failed: %v", err)
		}
		c.ident = id
		user = id.User
	}
	c.user = user
	// Heart-beats as the specification negotiates them: each direction's
	// interval is the larger of what one side can do and the other wants.
	var send, recv time.Duration
	if v >= V11 {
		if cy > 0 && c.s.cfg.HeartBeatSend > 0 {
			send = max(cy, c.s.cfg.HeartBeatSend)
		}
		if cx > 0 && c.s.cfg.HeartBeatRecv > 0 {
			recv = max(cx, c.s.cfg.HeartBeatRecv)
		}
	}
	idle := time.Duration(0)
	if recv > 0 {
		idle = recv + max(recv/2, time.Second)
	}
	c.dc.connected(idle)
	c.out.setHeartBeat(send)
	resp := frame.New(frame.CONNECTED,
		frame.Version, v.String(),
		frame.Server, c.s.cfg.ServerName,
		frame.Session, c.id)
	if v >= V11 {
		// The negotiated intervals, as RabbitMQ sends them: "0" where a
		// direction is off. Announcing HeartBeatRecv to a client that can
		// send none (cx 0) would ask for heart-beats the server never
		// enforces, and clients such as go-stomp take sy as their interval
		// as is.
		resp.Header.Add(frame.HeartBeat, fmt.Sprintf("%d,%d", send.Milliseconds(), recv.Milliseconds()))
	}
	c.out.control(resp, false)
	c.state = stateConnected
	c.connected = true
	c.info.setConnected(user, c.clientID, v)
	c.log.Debug().Str("version", v.String()).Str("user", user).Dur("hb_send", send).Dur("hb_recv", recv).Msg("connected")
	return nil
}

// truncate shortens client text quoted in errors.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
