// Package mqtt is Tandem's MQTT 3.1.1 and 5.0 adapter over the engine.
//
// mochi-mqtt/server (v2.7.9) is the MQTT front: it does the codec, CONNECT
// validation, keepalive deadlines, inbound topic aliases, PINGREQ and
// DISCONNECT. Everything that touches message state is Tandem's, through
// one mochi hook (hook.go), as docs/mqtt-design.md describes:
//
//   - PUBLISH goes to the connection's publish pipeline (pipeline.go),
//     which commits consecutive publishes with one engine batch (one fsync
//     when a durable queue is reached) and writes each PUBACK after the
//     commit returns. mochi is told to do nothing more (ErrRejectPacket).
//   - SUBSCRIBE, UNSUBSCRIBE and the client's PUBACKs are handled in
//     OnPacketRead; mochi's topic index and inflight map stay empty.
//   - Deliveries come only from the engine and are written by the
//     connection's own writer (outbox.go), with packet ids from its own
//     table and a window bounded by the client's Receive Maximum.
//
// Every goroutine the Server starts is joined by Close: per connection the
// mochi read loop (run by Serve's accept loop), the publish pipeline and
// the writer. mochi's own per-client WriteLoop goroutine, which Tandem
// leaves idle, is stopped by mochi when its client ends but is not joined.
//
// Sessions, retained messages and competing consumers (second slice):
//
//   - Persistent sessions (session.go): MQTT 3.1.1 clean session 0 or an
//     MQTT 5 Session Expiry Interval > 0 (capped by SessionExpiryMax). The
//     QoS 1 filters are bound to the durable queue "$mqtt/<client id>";
//     the filters and expiry are a record in the engine KV. Takeover,
//     resume (session present 1, backlog in order within the window),
//     clean start, expiry (timer on Config.Clock, and at startup) and
//     restarts are handled.
//   - $queue/NAME (publish enqueues, subscribe competes; PUBACK acks, an
//     MQTT 5 PUBACK >= 0x80 NACKs) and $share/GROUP/FILTER (one durable
//     group queue, protocol.SharedSubscriptionQueue).
//   - Retained messages (retained.go) in the engine KV, with Retain
//     Handling and Retain As Published.
//
// Not implemented yet (docs/mqtt-design.md §8.10): QoS 2 (refused: MQTT 5
// CONNACK says Maximum QoS 1 and a QoS 2 PUBLISH gets DISCONNECT 0x9B; an
// MQTT 3.1.1 connection that sends one is closed), authentication.
//
// Wills (will.go) are stored in the engine KV at CONNECT and published
// through the engine when a connection ends without a normal DISCONNECT,
// after their Will Delay Interval (Config.Clock) unless the session
// resumes; wills left by a stopped broker are published at the next start.
package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/protocol"
)

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("mqtt: server closed")

// Config is the MQTT server's configuration. Every limit is finite.
type Config struct {
	// MaxPacketSize bounds one packet, checked on its fixed header before
	// the rest is read; it is advertised to MQTT 5 clients.
	MaxPacketSize int
	// ReceiveMaximum is how many QoS 1 publishes one connection may have
	// unacknowledged (advertised to MQTT 5 clients; over it they are
	// disconnected with 0x93). It also bounds the connection's publish
	// pipeline and its queue of acks waiting to be written.
	ReceiveMaximum int
	// MaxInflight caps the QoS 1 deliveries one connection has unacked:
	// the client's Receive Maximum, clamped to this (MQTT 3.1.1 clients,
	// which have none, get this).
	MaxInflight int
	// KeepaliveMin and KeepaliveMax bound the keepalive. An MQTT 5 client
	// asking for 0 or more than the maximum gets the maximum, less than
	// the minimum the minimum, and is told (Server Keep Alive). An MQTT
	// 3.1.1 client cannot be told: more than the maximum gets the maximum,
	// 0 (no keepalive) and less than the minimum are kept, as the spec
	// requires.
	KeepaliveMin, KeepaliveMax time.Duration
	// SessionExpiryMax caps the session expiry interval of a persistent
	// session (MQTT 5 Session Expiry Interval; an MQTT 3.1.1 clean
	// session 0 gets the cap). 0 disables persistent sessions: every
	// session then ends with its connection.
	SessionExpiryMax time.Duration
	// TopicAliasMax is the highest topic alias an MQTT 5 client may use.
	TopicAliasMax int
	// MaxSubscriptions bounds the filters of one connection.
	MaxSubscriptions int
	// TopicBuffer bounds the QoS 0 messages waiting in one connection's
	// outbox; past it they are dropped for that connection and counted.
	// QoS 1 deliveries are bounded by MaxInflight instead and never dropped
	// for a full buffer.
	TopicBuffer int
	// SessionQueueMaxLength and SessionQueueMaxBytes bound the in-memory
	// backlog of a connection's QoS 1 subscriptions behind its window; past
	// them its oldest messages are dropped (overflow drop-head).
	SessionQueueMaxLength int64
	SessionQueueMaxBytes  int64
	// MaxRetained and MaxRetainedBytes bound the retained messages (their
	// number, and the sum of their payloads). A RETAIN publish that would
	// exceed them is published all the same but not retained, and counted
	// in Server.RetainedRefused.
	MaxRetained      int
	MaxRetainedBytes int64
	// ConnectTimeout bounds the time from accept to a complete CONNECT.
	ConnectTimeout time.Duration
	// Auth checks a CONNECT's user name and password (or the TLS client
	// certificate's user) and decides what the connection may publish and
	// subscribe to. nil accepts everyone for everything.
	Auth *protocol.Authenticator
	// Limiter bounds connections in total, per address and per second;
	// one over a limit gets CONNACK 0x97 or 0x9F (MQTT 3.1.1: 0x03). nil:
	// no limit.
	Limiter *protocol.ConnLimiter
	// Clock runs session expiry; nil means the real clock. Tests pass the
	// engine's fake clock.
	Clock engine.Clock
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		MaxPacketSize:         16 << 20,
		ReceiveMaximum:        1024,
		MaxInflight:           1024,
		KeepaliveMin:          5 * time.Second,
		KeepaliveMax:          time.Hour,
		SessionExpiryMax:      7 * 24 * time.Hour,
		TopicAliasMax:         64,
		MaxSubscriptions:      100,
		TopicBuffer:           1024,
		SessionQueueMaxLength: 100000,
		SessionQueueMaxBytes:  64 << 20,
		MaxRetained:           1_000_000,
		MaxRetainedBytes:      1 << 30,
		ConnectTimeout:        10 * time.Second,
	}
}

// Validate reports the first setting out of range.
func (c *Config) Validate() error {
	switch {
	case c.MaxPacketSize < 64 || c.MaxPacketSize > 256<<20:
		return fmt.Errorf("mqtt: max packet size must be between 64 bytes and 256MiB, got %d", c.MaxPacketSize)
	case c.ReceiveMaximum < 1 || c.ReceiveMaximum > math.MaxUint16:
		return fmt.Errorf("mqtt: receive maximum must be between 1 and 65535, got %d", c.ReceiveMaximum)
	case c.MaxInflight < 1 || c.MaxInflight > engine.MaxCredit:
		return fmt.Errorf("mqtt: max inflight must be between 1 and %d, got %d", engine.MaxCredit, c.MaxInflight)
	case c.KeepaliveMin < time.Second || c.KeepaliveMax < c.KeepaliveMin || c.KeepaliveMax > math.MaxUint16*time.Second:
		return fmt.Errorf("mqtt: keepalive bounds must satisfy 1s <= min (%v) <= max (%v) <= 65535s", c.KeepaliveMin, c.KeepaliveMax)
	case c.SessionExpiryMax < 0 || c.SessionExpiryMax > math.MaxUint32*time.Second:
		return fmt.Errorf("mqtt: session expiry maximum out of range: %v", c.SessionExpiryMax)
	case c.TopicAliasMax < 0 || c.TopicAliasMax > math.MaxUint16:
		return fmt.Errorf("mqtt: topic alias maximum must be between 0 and 65535, got %d", c.TopicAliasMax)
	case c.MaxSubscriptions < 1 || c.TopicBuffer < 1:
		return errors.New("mqtt: subscription and buffer limits must be positive")
	case c.SessionQueueMaxLength < 1 || c.SessionQueueMaxBytes < 1:
		return errors.New("mqtt: session queue limits must be positive")
	case c.MaxRetained < 1 || c.MaxRetainedBytes < 1:
		return errors.New("mqtt: retained message limits must be positive")
	case c.ConnectTimeout <= 0:
		return errors.New("mqtt: connect timeout must be positive")
	}
	return nil
}

// Server accepts MQTT connections and serves them over a Broker.
type Server struct {
	b   *engine.Broker
	cfg Config
	log zerolog.Logger
	ms  *mochi.Server

	// conns maps a mochi client to its connection (read on every packet).
	conns sync.Map // *mochi.Client -> *conn

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	netConns  map[net.Conn]*conn // nil until the session is established
	closed    bool
	wg        sync.WaitGroup // every goroutine the server starts

	clock engine.Clock
	// sessMu guards the persistent sessions (session.go).
	sessMu   sync.Mutex
	sessions map[string]*session
	live     map[string]*conn // the connection of each client id

	// retMu guards retained, the retained messages by topic (retained.go),
	// and retBytes, the sum of their payloads.
	retMu    sync.RWMutex
	retained map[string]*engine.Message
	retTree  retainTree // the same messages by topic level, for SUBSCRIBE
	retBytes int64

	// willMu guards wills, the wills waiting for their delay (will.go).
	willMu sync.Mutex
	wills  map[string]*pendingWill

	nextConn atomic.Uint64
	counts   protocol.ConnCounter // connections by transport (admin.go)
	// Dropped counts QoS 0 messages dropped for slow subscribers.
	Dropped atomic.Uint64
	// SubscriptionsRefused counts subscriptions refused for
	// Config.MaxSubscriptions.
	SubscriptionsRefused atomic.Uint64
	// RetainedRefused counts RETAIN publishes not retained because the
	// retained store was at MaxRetained or MaxRetainedBytes.
	RetainedRefused atomic.Uint64
}

// NewServer returns a server for b.
func NewServer(b *engine.Broker, cfg Config, log zerolog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With().Str("proto", "mqtt").Logger()
	s := &Server{
		b: b, cfg: cfg, log: log,
		listeners: make(map[net.Listener]struct{}),
		netConns:  make(map[net.Conn]*conn),
		clock:     cfg.Clock,
		sessions:  make(map[string]*session),
		live:      make(map[string]*conn),
		retained:  make(map[string]*engine.Message),
		wills:     make(map[string]*pendingWill),
	}
	if s.clock == nil {
		s.clock = engine.RealClock{}
	}
	if err := s.loadSessions(); err != nil {
		return nil, err
	}
	if err := s.loadQoS2(); err != nil {
		return nil, err
	}
	if err := s.loadRetained(); err != nil {
		return nil, err
	}
	if err := s.loadWills(); err != nil {
		return nil, err
	}
	caps := mochi.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(cfg.MaxPacketSize)
	caps.ReceiveMaximum = uint16(cfg.ReceiveMaximum)
	caps.MaximumInflight = uint16(cfg.MaxInflight)
	caps.TopicAliasMaximum = uint16(cfg.TopicAliasMax)
	// mochi forgets every client when it disconnects: sessions are
	// Tandem's (session.go), and CONNACK tells the granted expiry.
	caps.MaximumSessionExpiryInterval = 0
	caps.MaximumMessageExpiryInterval = 0 // no cap (mochi applies it only to what it holds)
	caps.MaximumClientWritesPending = 1   // mochi's outbound channel is never used
	caps.RetainAvailable = 1              // Tandem's (retained.go); mochi's index stays empty
	caps.SharedSubAvailable = 1           // Tandem's: $share/ group queues
	caps.Compatibilities.NoInheritedPropertiesOnAck = true
	s.ms = mochi.New(&mochi.Options{
		Capabilities:            caps,
		ClientNetReadBufferSize: 16 << 10,
		// $SYS topics are never published by Tandem; a long interval keeps
		// mochi from reading memory statistics for nobody.
		SysTopicResendInterval: 1 << 30,
		Logger:                 slog.New(quietHandler{zerolog.NewSlogHandler(log.With().Str("component", "mochi").Logger())}),
	})
	if err := s.ms.AddHook(&hook{s: s}, nil); err != nil {
		return nil, err
	}
	return s, nil
}

// Serve accepts connections on ln until Close. It returns ErrServerClosed
// after Close, or the accept error that stopped it.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	err := protocol.AcceptLoop(ln, s.log, s.isClosed, func(nc net.Conn) {
		if !s.register(nc) {
			nc.Close()
			return
		}
		go s.serveConn(nc)
	})
	if err == nil {
		return ErrServerClosed
	}
	return err
}

// register records an accepted connection; false once the server is closed.
func (s *Server) register(nc net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.netConns[nc] = nil
	s.counts.Opened(nc)
	s.wg.Add(1) // done when serveConn returns
	return true
}

// serveConn runs mochi's connection handling (CONNECT, then the read loop,
// which calls the hooks) and tears the connection down when it ends.
func (s *Server) serveConn(nc net.Conn) {
	defer s.wg.Done()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error().Interface("panic", r).Str("remote", nc.RemoteAddr().String()).Msg("connection panicked")
		}
		nc.Close()
		s.mu.Lock()
		c := s.netConns[nc]
		delete(s.netConns, nc)
		s.mu.Unlock()
		s.counts.Closed(nc)
		if c != nil {
			c.teardown() // normally done already by OnDisconnect
		}
	}()
	// mochi reads CONNECT with no deadline; its own deadlines (keepalive)
	// start once CONNECT is accepted.
	_ = nc.SetDeadline(time.Now().Add(s.cfg.ConnectTimeout))
	err := s.ms.EstablishConnection("tcp", nc)
	s.log.Debug().Err(err).Str("remote", nc.RemoteAddr().String()).Msg("connection ended")
}

// attach records c as the connection of its mochi client.
func (s *Server) attach(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if _, ok := s.netConns[c.nc]; ok {
		s.netConns[c.nc] = c
	}
	s.conns.Store(c.cl, c)
	return true
}

func (s *Server) detach(c *conn) {
	s.conns.CompareAndDelete(c.cl, c)
}

// conn returns the connection of a mochi client, or nil.
func (s *Server) conn(cl *mochi.Client) *conn {
	v, ok := s.conns.Load(cl)
	if !ok {
		return nil
	}
	return v.(*conn)
}

// Close stops accepting, closes every connection (MQTT 5 clients get
// DISCONNECT 0x8B first; unacked deliveries are dropped with their
// connection's session) and waits for every goroutine the server started.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	var errs []error
	for ln := range s.listeners {
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	ncs := make([]net.Conn, 0, len(s.netConns))
	var cs []*conn
	for nc, c := range s.netConns {
		ncs = append(ncs, nc)
		if c != nil {
			cs = append(cs, c)
		}
	}
	s.mu.Unlock()
	for _, c := range cs {
		if c.v5 {
			// A client that does not read must not hold Close up.
			_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
			_ = s.ms.DisconnectClient(c.cl, packets.ErrServerShuttingDown)
		}
	}
	for _, nc := range ncs {
		nc.Close()
	}
	s.wg.Wait()
	s.stopSessions()
	s.stopWills()
	if err := s.ms.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Conns returns the number of open connections (accepted, not yet ended).
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.netConns)
}

// quietHandler passes mochi's log records on one level lower than Error as
// Debug: mochi logs lifecycle lines at Info and per-client trouble (a
// client's low keepalive, a refused packet) at Warn, which Tandem reports
// itself where it matters.
type quietHandler struct{ slog.Handler }

func (h quietHandler) Enabled(ctx context.Context, l slog.Level) bool {
	if l < slog.LevelError {
		l = slog.LevelDebug
	}
	return h.Handler.Enabled(ctx, l)
}

func (h quietHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelError {
		r.Level = slog.LevelDebug
	}
	return h.Handler.Handle(ctx, r)
}

func (h quietHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return quietHandler{h.Handler.WithAttrs(as)}
}

func (h quietHandler) WithGroup(name string) slog.Handler {
	return quietHandler{h.Handler.WithGroup(name)}
}

// isClosed reports whether Close has begun.
func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}
