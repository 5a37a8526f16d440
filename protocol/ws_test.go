package protocol

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"
)

// wsWait bounds every wait in these tests; reaching it means a hang.
const wsWait = 10 * time.Second

// wsTestServer is a WSListener behind an HTTP server on 127.0.0.1, with an
// accept loop that hands each connection to the test.
type wsTestServer struct {
	l        *WSListener
	url      string
	accepted chan net.Conn
}

func startWSServer(t *testing.T, cfg WSConfig) *wsTestServer {
	t.Helper()
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = 1 << 20
	}
	if cfg.Messages == 0 {
		cfg.Messages = WSText
	}
	l, err := NewWSListener(cfg, nil, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(l)
	s := &wsTestServer{l: l, url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/", accepted: make(chan net.Conn, 16)}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		for {
			c, err := l.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("accept: %v", err)
				}
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			s.accepted <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-loopDone
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		srv.Close()
		waited := make(chan struct{})
		go func() { l.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(wsWait):
			t.Error("WSListener.Wait did not return")
		}
	})
	return s
}

// next returns the next accepted server-side connection.
func (s *wsTestServer) next(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-s.accepted:
		return c
	case <-time.After(wsWait):
		t.Fatal("no connection accepted")
		return nil
	}
}

func wsCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wsWait)
	t.Cleanup(cancel)
	return ctx
}

func dialWS(t *testing.T, url string, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(wsCtx(t), url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// dialStatus dials and returns the HTTP status of a refused handshake.
func dialStatus(t *testing.T, url string, opts *websocket.DialOptions) int {
	t.Helper()
	c, resp, err := websocket.Dial(wsCtx(t), url, opts)
	if err == nil {
		c.CloseNow()
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		t.Fatalf("dial: %v", err)
	}
	return resp.StatusCode
}

// readFull reads n bytes from c within wsWait.
func readFull(t *testing.T, c net.Conn, n int) string {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(wsWait)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

// closeStatus reads from c until the server's close frame arrives.
func closeStatus(t *testing.T, c *websocket.Conn) websocket.StatusCode {
	t.Helper()
	ctx := wsCtx(t)
	for i := 0; i < 100; i++ {
		_, _, err := c.Read(ctx)
		if err != nil {
			return websocket.CloseStatus(err)
		}
	}
	t.Fatal("no close frame in 100 messages")
	return 0
}

func TestWSReadsAStreamAcrossMessages(t *testing.T) {
	s := startWSServer(t, WSConfig{})
	c := dialWS(t, s.url, nil)
	sc := s.next(t)
	ctx := wsCtx(t)
	// A frame split across messages, an empty message, and two frames
	// packed into one message all read as one stream.
	for _, m := range []string{"SEND\nde", "stination:/q\n\nbody\x00", "", "A\x00B\x00"} {
		if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Write(ctx, websocket.MessageBinary, []byte{0xff, 0x00}); err != nil {
		t.Fatal(err)
	}
	want := "SEND\ndestination:/q\n\nbody\x00A\x00B\x00\xff\x00"
	if got := readFull(t, sc, len(want)); got != want {
		t.Fatalf("read %q, want %q", got, want)
	}
	if sc.RemoteAddr().String() == "" || sc.LocalAddr().String() == "" || sc.RemoteAddr().String() == sc.LocalAddr().String() {
		t.Errorf("addresses: local %v remote %v", sc.LocalAddr(), sc.RemoteAddr())
	}
}

func TestWSWriteIsOneMessage(t *testing.T) {
	tests := []struct {
		mode WSMessages
		data []byte
		want websocket.MessageType
	}{
		{WSText, []byte("MESSAGE\n\nhé\x00"), websocket.MessageText},
		{WSText, []byte("MESSAGE\n\n\xff\x00"), websocket.MessageBinary}, // not UTF-8
		{WSBinary, []byte("plain ascii"), websocket.MessageBinary},
	}
	for _, tt := range tests {
		s := startWSServer(t, WSConfig{Messages: tt.mode})
		c := dialWS(t, s.url, nil)
		sc := s.next(t)
		if n, err := sc.Write(tt.data); err != nil || n != len(tt.data) {
			t.Fatalf("write = %d, %v", n, err)
		}
		typ, b, err := c.Read(wsCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if typ != tt.want || !bytes.Equal(b, tt.data) {
			t.Errorf("mode %d: got %v %q, want %v %q", tt.mode, typ, b, tt.want, tt.data)
		}
	}
}

func TestWSReadDeadlineLeavesTheConnectionUsable(t *testing.T) {
	s := startWSServer(t, WSConfig{})
	c := dialWS(t, s.url, nil)
	sc := s.next(t)
	if err := sc.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := sc.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline = %v, want a timeout", err)
	}
	// The connection still works both ways.
	if err := c.Write(wsCtx(t), websocket.MessageText, []byte("after")); err != nil {
		t.Fatal(err)
	}
	if got := readFull(t, sc, 5); got != "after" {
		t.Fatalf("read %q", got)
	}
	if _, err := sc.Write([]byte("reply")); err != nil {
		t.Fatal(err)
	}
	if _, b, err := c.Read(wsCtx(t)); err != nil || string(b) != "reply" {
		t.Fatalf("client read %q, %v", b, err)
	}
}

func TestWSWriteDeadline(t *testing.T) {
	s := startWSServer(t, WSConfig{})
	dialWS(t, s.url, nil)
	sc := s.next(t)
	if err := sc.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err := sc.Write([]byte("late"))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past the deadline = %v, want a timeout", err)
	}
}

func TestWSWriteDeadlineDoesNotOutliveTheWrite(t *testing.T) {
	s := startWSServer(t, WSConfig{})
	c := dialWS(t, s.url, nil)
	sc := s.next(t)
	// A deadline that passes between writes must not cut off the pong the
	// library sends for a ping in the meantime.
	if err := sc.SetWriteDeadline(time.Now().Add(wsWait)); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := sc.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	go func() { // reads the "x" and the pong, until the cleanup closes c
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), wsWait)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping after the write deadline passed: %v", err)
	}
}

func TestWSCloseSendsACloseFrame(t *testing.T) {
	s := startWSServer(t, WSConfig{})
	c := dialWS(t, s.url, nil)
	sc := s.next(t)
	if err := sc.Close(); err != nil {
		t.Fatal(err)
	}
	if code := closeStatus(t, c); code != websocket.StatusNormalClosure {
		t.Errorf("close status %v, want 1000", code)
	}
	if _, err := sc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after close = %v", err)
	}
	if _, err := sc.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read after close = %v", err)
	}
}

func TestWSClientCloseIsEOF(t *testing.T) {
	s := startWSServer(t, WSConfig{})
	c := dialWS(t, s.url, nil)
	sc := s.next(t)
	closed := make(chan error, 1)
	go func() { closed <- c.Close(websocket.StatusNormalClosure, "bye") }()
	if err := sc.SetReadDeadline(time.Now().Add(wsWait)); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read = %v, want io.EOF", err)
	}
	sc.Close()
	if err := <-closed; err != nil {
		t.Errorf("client close: %v", err)
	}
}

func TestWSMaxMessageSize(t *testing.T) {
	s := startWSServer(t, WSConfig{MaxMessageSize: 1000})
	c := dialWS(t, s.url, nil)
	sc := s.next(t)
	ctx := wsCtx(t)
	if err := c.Write(ctx, websocket.MessageBinary, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	readFull(t, sc, 1000)
	if err := c.Write(ctx, websocket.MessageBinary, make([]byte, 1001)); err != nil {
		t.Fatal(err)
	}
	// The server reads up to the limit, then the stream fails.
	if err := sc.SetReadDeadline(time.Now().Add(wsWait)); err != nil {
		t.Fatal(err)
	}
	_, err := io.Copy(io.Discard, sc)
	if !errors.Is(err, websocket.ErrMessageTooBig) {
		t.Fatalf("read = %v, want ErrMessageTooBig", err)
	}
	sc.Close()
	if code := closeStatus(t, c); code != websocket.StatusMessageTooBig {
		t.Errorf("close status %v, want 1009", code)
	}
}

func TestWSBinaryOnlyRefusesText(t *testing.T) {
	s := startWSServer(t, WSConfig{Messages: WSBinary, Subprotocols: []string{"mqtt"}})
	c := dialWS(t, s.url, &websocket.DialOptions{Subprotocols: []string{"mqtt"}})
	sc := s.next(t)
	if err := c.Write(wsCtx(t), websocket.MessageText, []byte("text")); err != nil {
		t.Fatal(err)
	}
	if err := sc.SetReadDeadline(time.Now().Add(wsWait)); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Read(make([]byte, 4)); !errors.Is(err, errTextMessage) {
		t.Fatalf("read = %v, want errTextMessage", err)
	}
	sc.Close()
	if code := closeStatus(t, c); code != websocket.StatusUnsupportedData {
		t.Errorf("close status %v, want 1003", code)
	}
}

func TestWSSubprotocols(t *testing.T) {
	mqttLike := startWSServer(t, WSConfig{Subprotocols: []string{"mqtt", "mqttv3.1"}, RequireSubprotocol: true})
	stompLike := startWSServer(t, WSConfig{Subprotocols: []string{"v10.stomp", "v11.stomp", "v12.stomp"}})
	tests := []struct {
		s       *wsTestServer
		offer   []string
		code    int
		chosen  string
		comment string
	}{
		{mqttLike, []string{"mqtt"}, 101, "mqtt", ""},
		{mqttLike, []string{"foo", "mqttv3.1", "mqtt"}, 101, "mqttv3.1", "the client's first supported"},
		{mqttLike, nil, 400, "", "a subprotocol is required"},
		{mqttLike, []string{"v12.stomp"}, 400, "", "none supported"},
		{stompLike, []string{"v10.stomp", "v11.stomp", "v12.stomp"}, 101, "v10.stomp", ""},
		{stompLike, []string{"v12.stomp"}, 101, "v12.stomp", ""},
		{stompLike, nil, 101, "", "none offered is fine"},
		{stompLike, []string{"mqtt"}, 400, "", "none supported"},
	}
	for _, tt := range tests {
		c, resp, err := websocket.Dial(wsCtx(t), tt.s.url, &websocket.DialOptions{Subprotocols: tt.offer})
		if err != nil {
			if resp == nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.code {
				t.Errorf("offer %q: status %d, want %d (%s)", tt.offer, resp.StatusCode, tt.code, tt.comment)
			}
			continue
		}
		if tt.code != 101 || c.Subprotocol() != tt.chosen {
			t.Errorf("offer %q: accepted with %q, want status %d and %q (%s)", tt.offer, c.Subprotocol(), tt.code, tt.chosen, tt.comment)
		}
		tt.s.next(t).Close()
		c.CloseNow()
	}
}

func TestWSOrigin(t *testing.T) {
	s := startWSServer(t, WSConfig{OriginPatterns: []string{"*.example.com", "https://app.test"}})
	host := strings.TrimSuffix(strings.TrimPrefix(s.url, "ws://"), "/")
	tests := []struct {
		origin string
		code   int
	}{
		{"", 101},               // not a browser
		{"http://" + host, 101}, // same host
		{"http://a.example.com", 101},
		{"https://app.test", 101},
		{"http://app.test", 403}, // the pattern names the scheme
		{"http://evil.test", 403},
		{"http://example.com.evil.test", 403},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.origin != "" {
			h.Set("Origin", tt.origin)
		}
		if code := dialStatus(t, s.url, &websocket.DialOptions{HTTPHeader: h}); code != tt.code {
			t.Errorf("origin %q: status %d, want %d", tt.origin, code, tt.code)
		}
		if tt.code == 101 {
			s.next(t).Close()
		}
	}
}

func TestWSNotAnUpgrade(t *testing.T) {
	s := startWSServer(t, WSConfig{})
	resp, err := http.Get("http" + strings.TrimPrefix(s.url, "ws"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("plain GET: %d, want 426", resp.StatusCode)
	}
}

func TestWSListenerClose(t *testing.T) {
	s := startWSServer(t, WSConfig{})
	c := dialWS(t, s.url, nil)
	sc := s.next(t)
	if err := s.l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("accept after close = %v", err)
	}
	if code := dialStatus(t, s.url, nil); code != http.StatusServiceUnavailable {
		t.Errorf("handshake after close: %d, want 503", code)
	}
	// A connection closed while the server shuts down says so.
	sc.Close()
	if code := closeStatus(t, c); code != websocket.StatusGoingAway {
		t.Errorf("close status %v, want 1001", code)
	}
}

func TestWSCloseIsBoundedWhenTheClientIsSilent(t *testing.T) {
	s := startWSServer(t, WSConfig{CloseTimeout: 50 * time.Millisecond})
	// A raw client that completes the handshake and then never reads or
	// answers the close frame.
	host := strings.TrimSuffix(strings.TrimPrefix(s.url, "ws://"), "/")
	nc, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET / HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	sc := s.next(t)
	start := time.Now()
	sc.Close() // returns at once; the handshake runs in the handler
	s.l.Close()
	waited := make(chan struct{})
	go func() { s.l.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(wsWait):
		t.Fatal("the closing handshake with a silent client did not end")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("close took %v", d)
	}
}

func TestWSConfigValidate(t *testing.T) {
	bad := []WSConfig{
		{Messages: 0, MaxMessageSize: 1},
		{Messages: WSText, MaxMessageSize: 0},
		{Messages: WSBinary, MaxMessageSize: 1, RequireSubprotocol: true},
		{Messages: WSText, MaxMessageSize: 1, OriginPatterns: []string{"a["}},
		{Messages: WSText, MaxMessageSize: 1, OriginPatterns: []string{""}},
	}
	for _, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: Validate() = nil", c)
		}
	}
}
