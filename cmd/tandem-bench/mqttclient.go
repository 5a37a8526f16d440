package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// The MQTT scenarios use this minimal MQTT 3.1.1 client, not paho. The
// load tool shares two cores with the broker it measures, so what the
// client spends per message is taken from the broker: paho.mqtt.golang
// makes a token and passes each publish through channels, and paho.golang
// (MQTT 5 only, which nats-server does not speak) blocks a QoS 1 Publish
// until its PUBACK, so pipelining needs a goroutine per message in flight.
// Here a publish is a few bytes appended to a buffered writer and a
// delivery is parsed in place from the read buffer, with no allocation;
// control packets (CONNECT, SUBSCRIBE, CONNACK, SUBACK) use mochi's
// packets codec. docs/benchmarks.md has the measured difference.
//
// An mqttConn is safe for one reader and several writers: writes take wmu.

// maxMQTTPacket bounds a packet the client reads.
const maxMQTTPacket = 1 << 20

// errConnRefused is returned for a CONNACK with a non-zero return code.
var errConnRefused = errors.New("tandem-bench: broker refused CONNECT")

// mqttConn is one MQTT 3.1.1 client connection.
type mqttConn struct {
	nc net.Conn
	br *bufio.Reader

	wmu sync.Mutex // guards bw and out
	bw  *bufio.Writer
	out []byte // scratch for one packet

	wrote  atomic.Bool   // a packet was written since the pinger last looked
	done   chan struct{} // closed by close
	pinger sync.WaitGroup
	once   sync.Once
}

// mqttDial says how to connect.
type mqttDial struct {
	addr      string
	clientID  string
	clean     bool
	keepalive time.Duration // 0: none; else the pinger sends PINGREQ when idle
	username  string
	password  string
	bufSize   int // read and write buffer bytes; 0: 64 KiB
}

// dialMQTT connects and performs CONNECT/CONNACK. The connection's
// deadline follows ctx: when ctx ends, blocked reads and writes fail.
func dialMQTT(ctx context.Context, o mqttDial) (c *mqttConn, sessionPresent bool, err error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", o.addr)
	if err != nil {
		return nil, false, err
	}
	size := o.bufSize
	if size == 0 {
		size = 64 << 10
	}
	c = &mqttConn{
		nc:   nc,
		br:   bufio.NewReaderSize(nc, size),
		bw:   bufio.NewWriterSize(nc, size),
		done: make(chan struct{}),
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Now()) })
	fail := func(err error) (*mqttConn, bool, error) {
		stop()
		nc.Close()
		return nil, false, fmt.Errorf("connect %s as %s: %w", o.addr, o.clientID, err)
	}
	ka := uint16(min(o.keepalive/time.Second, 65535))
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			ClientIdentifier: o.clientID,
			Clean:            o.clean,
			Keepalive:        ka,
		},
	}
	if o.username != "" {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte(o.username)
		pk.Connect.PasswordFlag, pk.Connect.Password = true, []byte(o.password)
	}
	// The handshake has its own bound so that a silent listener cannot hold
	// a scenario until the hard deadline.
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		return fail(err)
	}
	if err := c.send(buf.Bytes()); err != nil {
		return fail(err)
	}
	typ, _, body, err := c.readPacket()
	if err != nil {
		return fail(err)
	}
	if typ != packets.Connack {
		return fail(fmt.Errorf("got packet type %d, want CONNACK", typ))
	}
	ack := packets.Packet{ProtocolVersion: 4}
	if err := ack.ConnackDecode(body); err != nil {
		return fail(err)
	}
	if ack.ReasonCode != 0 {
		return fail(fmt.Errorf("%w: return code %d", errConnRefused, ack.ReasonCode))
	}
	if ctx.Err() == nil {
		_ = nc.SetDeadline(time.Time{})
	}
	if ka > 0 {
		c.pinger.Add(1)
		go c.ping(time.Duration(ka) * time.Second / 2)
	}
	return c, ack.SessionPresent, nil
}

// ping sends a PINGREQ every interval in which nothing else was written,
// so the broker's keepalive never expires. It ends with the connection.
func (c *mqttConn) ping(interval time.Duration) {
	defer c.pinger.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			if c.wrote.Swap(false) {
				continue
			}
			if c.send([]byte{packets.Pingreq << 4, 0}) != nil {
				return
			}
		}
	}
}

// subscribe sends SUBSCRIBE for one filter and waits for its SUBACK; only
// call it before the connection's reader starts.
func (c *mqttConn) subscribe(filter string, qos byte) error {
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Subscribe, Qos: 1},
		PacketID:        1,
		ProtocolVersion: 4,
		Filters:         packets.Subscriptions{{Filter: filter, Qos: qos}},
	}
	var buf bytes.Buffer
	if err := pk.SubscribeEncode(&buf); err != nil {
		return err
	}
	if err := c.send(buf.Bytes()); err != nil {
		return err
	}
	for range 1000 { // bounded; a broker may deliver before the SUBACK
		typ, _, body, err := c.readPacket()
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", filter, err)
		}
		if typ != packets.Suback {
			continue
		}
		ack := packets.Packet{ProtocolVersion: 4}
		if err := ack.SubackDecode(body); err != nil {
			return err
		}
		if len(ack.ReasonCodes) != 1 || ack.ReasonCodes[0] > 2 {
			return fmt.Errorf("subscribe %s: refused (SUBACK %v)", filter, ack.ReasonCodes)
		}
		if ack.ReasonCodes[0] < qos {
			return fmt.Errorf("subscribe %s: granted QoS %d, asked for %d", filter, ack.ReasonCodes[0], qos)
		}
		return nil
	}
	return fmt.Errorf("subscribe %s: no SUBACK", filter)
}

// readPacket reads one packet. body is valid until the next read: it
// points into the read buffer when the packet fits.
func (c *mqttConn) readPacket() (typ, flags byte, body []byte, err error) {
	hb, err := c.br.ReadByte()
	if err != nil {
		return 0, 0, nil, err
	}
	n, _, err := packets.DecodeLength(c.br)
	if err != nil {
		return 0, 0, nil, err
	}
	if n > maxMQTTPacket {
		return 0, 0, nil, fmt.Errorf("packet of %d bytes, over the client's %d", n, maxMQTTPacket)
	}
	if n <= c.br.Size() {
		body, err = c.br.Peek(n)
		if err != nil {
			return 0, 0, nil, err
		}
		_, _ = c.br.Discard(n) // cannot fail: Peek returned n bytes
	} else {
		body = make([]byte, n)
		if _, err := io.ReadFull(c.br, body); err != nil {
			return 0, 0, nil, err
		}
	}
	return hb >> 4, hb & 0x0f, body, nil
}

// buffered reports whether a packet is (at least partly) in memory already,
// so that a reader can put off flushing until it would block.
func (c *mqttConn) buffered() bool { return c.br.Buffered() > 0 }

// writePublish buffers a PUBLISH. Nothing reaches the broker before flush
// or before the buffer fills.
func (c *mqttConn) writePublish(topic string, qos byte, pid uint16, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.out = appendPublish(c.out[:0], topic, qos, pid, payload)
	_, err := c.bw.Write(c.out)
	c.wrote.Store(true)
	return err
}

// writePuback buffers a PUBACK.
func (c *mqttConn) writePuback(pid uint16) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.bw.Write([]byte{packets.Puback << 4, 2, byte(pid >> 8), byte(pid)})
	c.wrote.Store(true)
	return err
}

// flush sends what was buffered.
func (c *mqttConn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.bw.Flush()
}

// send writes one encoded packet and flushes.
func (c *mqttConn) send(pk []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.bw.Write(pk); err != nil {
		return err
	}
	c.wrote.Store(true)
	return c.bw.Flush()
}

// disconnect flushes, sends DISCONNECT and closes the connection.
func (c *mqttConn) disconnect() {
	_ = c.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
	_ = c.send([]byte{packets.Disconnect << 4, 0})
	c.close()
}

// close closes the connection and joins its pinger.
func (c *mqttConn) close() {
	c.once.Do(func() {
		close(c.done)
		c.nc.Close()
	})
	c.pinger.Wait()
}

// appendPublish appends an MQTT 3.1.1 PUBLISH to b.
func appendPublish(b []byte, topic string, qos byte, pid uint16, payload []byte) []byte {
	rl := 2 + len(topic) + len(payload)
	if qos > 0 {
		rl += 2
	}
	b = append(b, packets.Publish<<4|qos<<1)
	b = appendVarint(b, rl)
	b = binary.BigEndian.AppendUint16(b, uint16(len(topic)))
	b = append(b, topic...)
	if qos > 0 {
		b = binary.BigEndian.AppendUint16(b, pid)
	}
	return append(b, payload...)
}

// appendVarint appends MQTT's variable byte integer (1.5.5).
func appendVarint(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// parsePublish splits an MQTT 3.1.1 PUBLISH body (flags from its fixed
// header) into topic, packet id (0 for QoS 0) and payload, in place.
func parsePublish(flags byte, body []byte) (topic []byte, qos byte, pid uint16, payload []byte, err error) {
	qos = (flags >> 1) & 3
	if len(body) < 2 {
		return nil, 0, 0, nil, errors.New("PUBLISH too short")
	}
	tl := int(binary.BigEndian.Uint16(body))
	off := 2 + tl
	if qos > 0 {
		off += 2
	}
	if qos > 2 || len(body) < off {
		return nil, 0, 0, nil, errors.New("malformed PUBLISH")
	}
	if qos > 0 {
		pid = binary.BigEndian.Uint16(body[2+tl:])
	}
	return body[2 : 2+tl], qos, pid, body[off:], nil
}
