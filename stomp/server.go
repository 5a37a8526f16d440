// Package stomp is Tandem's STOMP 1.0, 1.1 and 1.2 adapter: a bounded frame
// reader, a connection state machine and listeners, over the engine.
//
// Each connection runs three goroutines, all owned by the Server and waited
// for by Close: a reader that parses frames (bounded by Limits) and hands
// them on, a processor that applies them to the engine in order, and a
// writer that drains the connection's outbox to the socket. Consecutive
// SENDs are committed together (engine.PublishAll: one fsync for all of
// them), so a client that pipelines SENDs is not held to one fsync per
// frame; each RECEIPT still follows the fsync of its own SEND.
package stomp

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/protocol"
)

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("stomp: server closed")

// Config is the STOMP server's configuration. Every limit is finite.
type Config struct {
	Limits Limits
	// HeartBeatSend is the shortest interval at which the server offers to
	// send heart-beats; HeartBeatRecv the interval at which it asks the
	// client to send them. 0 turns either off.
	HeartBeatSend, HeartBeatRecv time.Duration
	// ConnectTimeout bounds the time from accept to a complete CONNECT.
	ConnectTimeout time.Duration
	// FrameTimeout bounds the time one frame may take to arrive once its
	// first byte has, so a client trickling bytes cannot hold a connection.
	FrameTimeout time.Duration
	// DefaultPrefetch is a subscription's credit (unacked messages) when the
	// client names none; MaxPrefetch caps what a client may ask for.
	DefaultPrefetch, MaxPrefetch int
	// MaxSubscriptions and MaxTransactions are per connection;
	// MaxTxnFrames bounds the SENDs and ACKs one transaction buffers.
	MaxSubscriptions, MaxTransactions, MaxTxnFrames int
	// TopicBuffer bounds the topic messages waiting in one connection's
	// outbox. Past it, topic messages to that connection are dropped (and
	// counted); queue messages are bounded by credit instead and never
	// dropped.
	TopicBuffer int
	// Auth checks a CONNECT's login and passcode (or the TLS client
	// certificate's user) and decides what the connection may publish and
	// subscribe to. nil accepts everyone for everything.
	Auth *protocol.Authenticator
	// Limiter bounds connections in total, per address and per second;
	// one over a limit gets an ERROR at CONNECT. nil: no limit.
	Limiter *protocol.ConnLimiter
	// ServerName is sent in CONNECTED.
	ServerName string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Limits:           Limits{MaxLine: 8 << 10, MaxHeaders: 128, MaxBody: 16 << 20},
		HeartBeatSend:    10 * time.Second,
		HeartBeatRecv:    10 * time.Second,
		ConnectTimeout:   10 * time.Second,
		FrameTimeout:     30 * time.Second,
		DefaultPrefetch:  100,
		MaxPrefetch:      10000,
		MaxSubscriptions: 1000,
		MaxTransactions:  64,
		MaxTxnFrames:     10000,
		TopicBuffer:      10000,
		ServerName:       "tandem",
	}
}

// Validate reports the first setting out of range.
func (c *Config) Validate() error {
	switch {
	case c.Limits.MaxLine < 256 || c.Limits.MaxHeaders < 8 || c.Limits.MaxBody < 1:
		return fmt.Errorf("stomp: limits too small: %+v", c.Limits)
	case c.HeartBeatSend < 0 || c.HeartBeatRecv < 0:
		return errors.New("stomp: heart-beat intervals must not be negative")
	case c.ConnectTimeout <= 0 || c.FrameTimeout <= 0:
		return errors.New("stomp: connect and frame timeouts must be positive")
	case c.DefaultPrefetch < 1 || c.MaxPrefetch < c.DefaultPrefetch || c.MaxPrefetch > engine.MaxCredit:
		return fmt.Errorf("stomp: prefetch must satisfy 1 <= default (%d) <= max (%d) <= %d", c.DefaultPrefetch, c.MaxPrefetch, engine.MaxCredit)
	case c.MaxSubscriptions < 1 || c.MaxTransactions < 1 || c.MaxTxnFrames < 1 || c.TopicBuffer < 1:
		return errors.New("stomp: subscription, transaction and buffer limits must be positive")
	}
	return nil
}

// Server accepts STOMP connections and serves them over a Broker.
type Server struct {
	b   *engine.Broker
	cfg Config
	log zerolog.Logger

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closed    bool
	wg        sync.WaitGroup // every goroutine the server starts

	nextConn atomic.Uint64
	counts   protocol.ConnCounter // connections by transport (admin.go)
	// Dropped counts topic messages dropped for slow subscribers.
	Dropped atomic.Uint64
	// SubscriptionsRefused counts SUBSCRIBEs refused for
	// Config.MaxSubscriptions.
	SubscriptionsRefused atomic.Uint64
}

// NewServer returns a server for b.
func NewServer(b *engine.Broker, cfg Config, log zerolog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Server{
		b: b, cfg: cfg, log: log.With().Str("proto", "stomp").Logger(),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
	}, nil
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
		if !s.start(nc) {
			nc.Close()
		}
	})
	if err == nil {
		return ErrServerClosed
	}
	return err
}

// ServeConn serves one already accepted connection (a WebSocket carrying
// STOMP, say) and returns when it ends.
func (s *Server) ServeConn(nc net.Conn) {
	c := s.newConn(nc)
	if c == nil {
		nc.Close()
		return
	}
	c.run()
}

// start serves nc in its own goroutines; false once the server is closed.
func (s *Server) start(nc net.Conn) bool {
	c := s.newConn(nc)
	if c == nil {
		return false
	}
	go c.run()
	return true
}

// newConn registers a connection, or returns nil after Close.
func (s *Server) newConn(nc net.Conn) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	c := newConn(s, nc)
	s.conns[c] = struct{}{}
	s.counts.Opened(nc)
	s.wg.Add(1) // done when the connection is torn down
	return c
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.counts.Closed(c.nc)
	s.wg.Done()
}

// Close stops accepting, closes every connection (their unacked messages
// return to their queues) and waits for every goroutine the server started.
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
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.shutdown()
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// Conns returns the number of open connections.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// isClosed reports whether Close has begun.
func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}
