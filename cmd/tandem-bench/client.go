package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/go-stomp/stomp/v3/frame"
)

// brokerOptions say where and as whom to connect. Every scenario takes
// them, so the same run works against Tandem and RabbitMQ.
type brokerOptions struct {
	addr     string // host:port of the STOMP listener
	login    string // empty: no login header
	passcode string
	host     string // the CONNECT host header (RabbitMQ's virtual host)
}

// stompConn is a minimal STOMP client connection built on go-stomp's frame
// codec. The bench does not use go-stomp's Conn because its Send with a
// receipt blocks until that receipt arrives; a producer here keeps a window
// of several receipts outstanding and decides itself when to flush.
//
// A stompConn is not safe for concurrent writes: each scenario has one
// writer per connection, and a separate goroutine may read.
type stompConn struct {
	nc      net.Conn
	br      *bufio.Reader
	r       *frame.Reader
	bw      *bufio.Writer // frames collect here until flush
	w       *frame.Writer // flushes each frame into bw, not onto the wire
	version string        // negotiated STOMP version
}

// errBrokerError is returned for an ERROR frame from the broker.
var errBrokerError = errors.New("tandem-bench: broker sent ERROR")

// dial connects and performs the CONNECT/CONNECTED handshake, with heart-beats
// off. The connection's deadline follows ctx: when ctx ends, blocked reads
// and writes fail.
func dial(ctx context.Context, o brokerOptions) (*stompConn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", o.addr)
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Now()) })
	c := &stompConn{nc: nc, br: bufio.NewReaderSize(nc, 64<<10), bw: bufio.NewWriterSize(nc, 64<<10)}
	// frame.NewReaderSize reuses br because it is at least as large.
	c.r = frame.NewReaderSize(c.br, 4096)
	c.w = frame.NewWriterSize(c.bw, 4096)

	host := o.host
	if host == "" {
		host, _, _ = net.SplitHostPort(o.addr)
	}
	f := frame.New(frame.CONNECT,
		frame.AcceptVersion, "1.0,1.1,1.2",
		frame.Host, host,
		frame.HeartBeat, "0,0")
	if o.login != "" {
		f.Header.Add(frame.Login, o.login)
		f.Header.Add(frame.Passcode, o.passcode)
	}
	// The handshake has its own bound so that a silent listener cannot hold
	// a scenario until the hard deadline.
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.send(f); err != nil {
		nc.Close()
		return nil, fmt.Errorf("connect %s: %w", o.addr, err)
	}
	resp, err := c.read()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("connect %s: %w", o.addr, err)
	}
	if resp.Command != frame.CONNECTED {
		nc.Close()
		return nil, fmt.Errorf("connect %s: %w: %s %s", o.addr, errBrokerError, resp.Header.Get(frame.Message), strings.TrimSpace(string(resp.Body)))
	}
	c.version = resp.Header.Get(frame.Version)
	if c.version == "" {
		c.version = "1.0"
	}
	if ctx.Err() == nil {
		_ = nc.SetDeadline(time.Time{})
	}
	return c, nil
}

// write buffers f; nothing reaches the broker before flush (or before the
// buffer fills).
func (c *stompConn) write(f *frame.Frame) error { return c.w.Write(f) }

// flush sends what write buffered.
func (c *stompConn) flush() error { return c.bw.Flush() }

// send writes and flushes f.
func (c *stompConn) send(f *frame.Frame) error {
	if err := c.write(f); err != nil {
		return err
	}
	return c.flush()
}

// buffered reports whether more input is already in memory, so that a reader
// can put off flushing its replies until it would block.
func (c *stompConn) buffered() bool { return c.br.Buffered() > 0 }

// read returns the next frame, skipping heart-beats. An ERROR frame is
// returned as errBrokerError with its message.
func (c *stompConn) read() (*frame.Frame, error) {
	for {
		f, err := c.r.Read()
		if err != nil {
			return nil, err
		}
		if f == nil {
			continue // heart-beat; the bench turns them off, a broker may not
		}
		if f.Command == frame.ERROR {
			return nil, fmt.Errorf("%w: %s %s", errBrokerError, f.Header.Get(frame.Message), strings.TrimSpace(string(f.Body)))
		}
		return f, nil
	}
}

// ack returns the frame that acknowledges msg in client-individual mode for
// the negotiated version.
func (c *stompConn) ack(msg *frame.Frame) *frame.Frame {
	switch c.version {
	case "1.2":
		return frame.New(frame.ACK, frame.Id, msg.Header.Get(frame.Ack))
	case "1.1":
		return frame.New(frame.ACK, frame.MessageId, msg.Header.Get(frame.MessageId), frame.Subscription, msg.Header.Get(frame.Subscription))
	default:
		return frame.New(frame.ACK, frame.MessageId, msg.Header.Get(frame.MessageId))
	}
}

// disconnect sends DISCONNECT with a receipt and waits for it for at most
// wait, then closes the connection. Only the caller may be reading.
func (c *stompConn) disconnect(wait time.Duration) {
	_ = c.nc.SetDeadline(time.Now().Add(wait))
	if err := c.send(frame.New(frame.DISCONNECT, frame.Receipt, "bye")); err == nil {
		for range 1_000_000 { // bounded: the deadline ends it sooner
			f, err := c.read()
			if err != nil || (f.Command == frame.RECEIPT && f.Header.Get(frame.ReceiptId) == "bye") {
				break
			}
		}
	}
	c.nc.Close()
}

// close closes the connection without a DISCONNECT.
func (c *stompConn) close() { c.nc.Close() }
