package stomp_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/tandem-mq/tandem/engine"
)

// rawFrame is a frame as it came off the wire: header lines are kept
// exactly as sent (not unescaped), in order.
type rawFrame struct {
	Command string
	Headers [][2]string // raw key and value
	Body    []byte
}

// Get returns the first raw value of key ("first wins", STOMP 1.2
// "Repeated Header Entries").
func (f *rawFrame) Get(key string) string {
	v, _ := f.Lookup(key)
	return v
}

func (f *rawFrame) Lookup(key string) (string, bool) {
	for _, h := range f.Headers {
		if h[0] == key {
			return h[1], true
		}
	}
	return "", false
}

// rawConn is a hand-driven STOMP client over a plain socket, for what
// go-stomp's client cannot express (STOMP 1.0/1.1 details, bad input,
// receipts on frames go-stomp sends without them).
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func (br *broker) raw() *rawConn {
	br.t.Helper()
	nc, err := net.Dial("tcp", br.addr)
	if err != nil {
		br.t.Fatal(err)
	}
	br.t.Cleanup(func() { nc.Close() })
	return &rawConn{t: br.t, nc: nc, br: bufio.NewReader(nc)}
}

// connect sends CONNECT with the given extra headers ("k:v" lines) and
// expects CONNECTED.
func (br *broker) rawConnect(lines ...string) *rawConn {
	br.t.Helper()
	rc := br.raw()
	rc.send("CONNECT", nil, lines...)
	if f := rc.read(); f.Command != "CONNECTED" {
		br.t.Fatalf("want CONNECTED, got %s %v %q", f.Command, f.Headers, f.Body)
	}
	return rc
}

// write writes bytes as they are.
func (rc *rawConn) write(s string) {
	rc.t.Helper()
	rc.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(rc.nc, s); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// send writes a frame; header lines are written exactly as given. A nil
// body gets no content-length.
func (rc *rawConn) send(command string, body []byte, lines ...string) {
	rc.t.Helper()
	var b strings.Builder
	b.WriteString(command + "\n")
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	if body != nil {
		b.WriteString("content-length:" + strconv.Itoa(len(body)) + "\n")
	}
	b.WriteString("\n")
	b.Write(body)
	b.WriteByte(0)
	rc.write(b.String())
}

// readFrame reads the next frame within the deadline, skipping
// heart-beats.
func (rc *rawConn) readFrame(d time.Duration) (*rawFrame, error) {
	rc.nc.SetReadDeadline(time.Now().Add(d))
	var line string
	for {
		l, err := rc.br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if l = strings.TrimSuffix(strings.TrimSuffix(l, "\n"), "\r"); l != "" {
			line = l
			break
		}
	}
	f := &rawFrame{Command: line}
	for {
		l, err := rc.br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		l = strings.TrimSuffix(l, "\n")
		if f.Command == "CONNECTED" || f.Command == "MESSAGE" || f.Command == "ERROR" || f.Command == "RECEIPT" {
			l = strings.TrimSuffix(l, "\r") // a 1.2 server may end lines with CRLF
		}
		if l == "" {
			break
		}
		k, v, _ := strings.Cut(l, ":")
		f.Headers = append(f.Headers, [2]string{k, v})
	}
	if cl, ok := f.Lookup("content-length"); ok {
		n, err := strconv.Atoi(cl)
		if err != nil {
			return nil, err
		}
		f.Body = make([]byte, n+1)
		if _, err := io.ReadFull(rc.br, f.Body); err != nil {
			return nil, err
		}
		if f.Body[n] != 0 {
			return nil, errors.New("body not followed by NUL")
		}
		f.Body = f.Body[:n]
		return f, nil
	}
	body, err := rc.br.ReadBytes(0)
	if err != nil {
		return nil, err
	}
	f.Body = body[:len(body)-1]
	return f, nil
}

func (rc *rawConn) read() *rawFrame {
	rc.t.Helper()
	f, err := rc.readFrame(5 * time.Second)
	if err != nil {
		rc.t.Fatalf("read frame: %v", err)
	}
	return f
}

// readUntil reads frames up to and including the first with command,
// returning those before it.
func (rc *rawConn) readUntil(command string) []*rawFrame {
	rc.t.Helper()
	var fs []*rawFrame
	for {
		f := rc.read()
		if f.Command == command {
			return fs
		}
		if f.Command == "ERROR" {
			rc.t.Fatalf("ERROR while waiting for %s: %v %q", command, f.Headers, f.Body)
		}
		fs = append(fs, f)
	}
}

// expectError reads an ERROR frame with a message header containing want.
func (rc *rawConn) expectError(want string) *rawFrame {
	rc.t.Helper()
	f := rc.read()
	if f.Command != "ERROR" {
		rc.t.Fatalf("want ERROR, got %s %v %q", f.Command, f.Headers, f.Body)
	}
	// The message header is the short description; details may be in the
	// body (STOMP 1.2 §ERROR).
	if m, ok := f.Lookup("message"); !ok || m == "" || !strings.Contains(m+"\n"+string(f.Body), want) {
		rc.t.Fatalf("ERROR message %q body %q, want %q in them", m, f.Body, want)
	}
	return f
}

// expectClosed waits until the server closes the connection, reading and
// discarding what remains. It fails after d.
func (rc *rawConn) expectClosed(d time.Duration) {
	rc.t.Helper()
	rc.nc.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, rc.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		rc.t.Fatalf("connection still open after %v", d)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(5 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// queueInfo returns the queue's state, or a zero QueueInfo if it does not
// exist.
func (br *broker) queueInfo(name string) engine.QueueInfo {
	qi, err := br.b.QueueInfo(name)
	if err != nil && !errors.Is(err, engine.ErrNoQueue) {
		br.t.Fatal(err)
	}
	return qi
}

// waitMessages waits until queue holds n messages (ready, scheduled and
// unacked).
func (br *broker) waitMessages(queue string, n int64) {
	br.t.Helper()
	waitFor(br.t, "queue "+queue+" to hold "+strconv.FormatInt(n, 10), func() bool { return br.queueInfo(queue).Messages == n })
}

// bodies returns the frames' bodies.
func bodies(fs []*rawFrame) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = string(f.Body)
	}
	return out
}

// barrier returns once the server has applied every frame c sent before
// it: frames of one connection are applied in order, and a SEND's RECEIPT
// follows its processing. A topic nobody reads keeps nothing.
func barrier(t *testing.T, c *gostomp.Conn) {
	t.Helper()
	if err := c.Send("/topic/barrier", "", nil, gostomp.SendOpt.Receipt); err != nil {
		t.Fatalf("barrier: %v", err)
	}
}
