package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	gostomp "github.com/go-stomp/stomp/v3"
)

// inProcess is a broker run in this process (so the race detector sees
// it), with every listener on a free loopback port.
type inProcess struct {
	rec    map[string]any // the ready line
	stderr *lines
	cancel context.CancelFunc
	exited chan struct{}
	code   int // run's result, set before exited closes
}

// startInProcess runs the broker with env over the test defaults and the
// given arguments, and waits for its ready line. The test's cleanup stops
// it and checks that it exits 0.
func startInProcess(t *testing.T, env map[string]string, args ...string) *inProcess {
	t.Helper()
	full := map[string]string{
		"TANDEM_DATA_DIR":       t.TempDir(),
		"TANDEM_ADMIN_ADDR":     "127.0.0.1:0",
		"TANDEM_STOMP_ADDR":     "127.0.0.1:0",
		"TANDEM_MQTT_ADDR":      "127.0.0.1:0",
		"TANDEM_WS_ADDR":        "127.0.0.1:0",
		"TANDEM_MQTT_TLS_ADDR":  "127.0.0.1:0",
		"TANDEM_STOMP_TLS_ADDR": "127.0.0.1:0",
		"TANDEM_WSS_ADDR":       "127.0.0.1:0",
		"TANDEM_LOG_FORMAT":     "json",
	}
	for k, v := range env {
		full[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &inProcess{stderr: newLines(), cancel: cancel, exited: make(chan struct{})}
	go func() {
		defer close(b.exited)
		b.code = run(ctx, process{args: args, getenv: func(k string) string { return full[k] }, stderr: b.stderr})
	}()
	t.Cleanup(func() {
		b.stop(t)
		if t.Failed() {
			all := b.stderr.all()
			t.Logf("broker log, last lines:\n%s", strings.Join(all[max(0, len(all)-60):], "\n"))
		}
	})
	b.rec = b.stderr.waitFor(t, "ready", b.exited)
	return b
}

// stop shuts the broker down and checks that it exits 0 in time.
func (b *inProcess) stop(t *testing.T) {
	t.Helper()
	b.cancel()
	select {
	case <-b.exited:
	case <-time.After(waitTimeout):
		t.Fatalf("broker did not stop within %v", waitTimeout)
	}
	if b.code != 0 {
		t.Errorf("run = %d; stderr:\n%s", b.code, strings.Join(b.stderr.all(), "\n"))
	}
}

// addr returns the bound address the ready line gives for key.
func (b *inProcess) addr(t *testing.T, key string) string {
	t.Helper()
	a, _ := b.rec[key].(string)
	if a == "" {
		t.Fatalf("ready line has no %q address: %v", key, b.rec)
	}
	return a
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// dialWS opens a WebSocket to url offering subprotocols.
func dialWS(t *testing.T, url string, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(testCtx(t), url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// wsStatus dials url and returns the handshake's HTTP status.
func wsStatus(t *testing.T, url string, opts *websocket.DialOptions) int {
	t.Helper()
	c, resp, err := websocket.Dial(testCtx(t), url, opts)
	if err == nil {
		c.CloseNow()
		return http.StatusSwitchingProtocols
	}
	if resp == nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return resp.StatusCode
}

// stompOverWS connects go-stomp over a WebSocket (text messages: every
// frame in these tests is UTF-8).
func stompOverWS(t *testing.T, url string, opts *websocket.DialOptions) *gostomp.Conn {
	t.Helper()
	if opts == nil {
		opts = &websocket.DialOptions{Subprotocols: []string{"v10.stomp", "v11.stomp", "v12.stomp"}}
	}
	wc := dialWS(t, url, opts)
	nc := websocket.NetConn(context.Background(), wc, websocket.MessageText)
	sc, err := gostomp.Connect(nc, gostomp.ConnOpt.HeartBeat(0, 0), gostomp.ConnOpt.Host("/"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sc.Disconnect() })
	return sc
}

// lockedConn makes paho.golang write each packet whole: it writes a
// packet's parts with separate Writes, holding the connection's lock if it
// has one. Over TCP the parts go out in one writev; over a client
// WebSocket each Write is a message, and another goroutine's packet (a
// PINGREQ, a PUBACK) could come between them.
type lockedConn struct {
	net.Conn
	sync.Mutex
}

// mqtt5Over connects paho.golang (MQTT 5) over nc and subscribes to
// filter.
func mqtt5Over(t *testing.T, nc net.Conn, id, filter string) *mqtt5 {
	t.Helper()
	c := &mqtt5{c: make(chan *paho.Publish, 100)}
	c.Client = paho.NewClient(paho.ClientConfig{ClientID: id, Conn: &lockedConn{Conn: nc},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { c.c <- pr.Packet; return true, nil },
		}})
	ctx := testCtx(t)
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	return c
}

// mqtt3At connects paho.mqtt.golang (MQTT 3.1.1) to broker URL (ws://,
// wss://, ssl://) and subscribes to filter.
func mqtt3At(t *testing.T, opts *pahov3.ClientOptions, id, filter string) *mqtt3 {
	t.Helper()
	c := &mqtt3{c: make(chan pahov3.Message, 100)}
	c.Client = pahov3.NewClient(opts.SetClientID(id).SetProtocolVersion(4).SetAutoReconnect(false).
		SetConnectTimeout(waitTimeout))
	if tok := c.Connect(); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("connect %v: %v", opts.Servers, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	tok := c.Subscribe(filter, 1, func(_ pahov3.Client, m pahov3.Message) { c.c <- m })
	if !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return c
}

// TestWebSocketBothProtocols checks MQTT 3.1.1, MQTT 5 and STOMP over
// WebSocket with real clients, and messages crossing between them: MQTT
// over WebSocket to STOMP over WebSocket and back, and to MQTT over TCP.
func TestWebSocketBothProtocols(t *testing.T) {
	b := startInProcess(t, nil)
	ws := "ws://" + b.addr(t, "websocket")
	for _, k := range []string{"mqtt_tls", "stomp_tls", "websocket_tls"} {
		if _, ok := b.rec[k]; ok {
			t.Errorf("ready line has %s without a certificate: %v", k, b.rec)
		}
	}

	m3 := mqtt3At(t, pahov3.NewClientOptions().AddBroker(ws+"/mqtt"), "ws3", "ws/#")
	wc := dialWS(t, ws+"/mqtt", &websocket.DialOptions{Subprotocols: []string{"mqtt"}})
	m5 := mqtt5Over(t, websocket.NetConn(context.Background(), wc, websocket.MessageBinary), "ws5", "ws/#")
	tcp := dialMQTT3(t, b.addr(t, "mqtt"), "tcp3", "ws/#", 1)
	sc := stompOverWS(t, ws+"/stomp", nil)
	sub, err := sc.Subscribe("/topic/ws.*", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}

	// STOMP over WebSocket -> both MQTT over WebSocket clients and MQTT
	// over TCP. The receipt also proves the SUBSCRIBE was processed.
	if err := sc.Send("/topic/ws.from-stomp", "text/plain", []byte("hello mqtt"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	if m := m3.next(t); m.Topic() != "ws/from-stomp" || string(m.Payload()) != "hello mqtt" {
		t.Fatalf("MQTT 3.1.1 over WebSocket got %s %q", m.Topic(), m.Payload())
	}
	if m := m5.next(t); m.Topic != "ws/from-stomp" || string(m.Payload) != "hello mqtt" || m.Properties.ContentType != "text/plain" {
		t.Fatalf("MQTT 5 over WebSocket got %s %q %+v", m.Topic, m.Payload, m.Properties)
	}
	if m := tcp.next(t); m.Topic() != "ws/from-stomp" {
		t.Fatalf("MQTT over TCP got %s", m.Topic())
	}
	if m := recvSTOMP(t, sub); string(m.Body) != "hello mqtt" {
		t.Fatalf("STOMP got its own %q", m.Body)
	}

	// MQTT over WebSocket -> STOMP over WebSocket.
	if tok := m3.Publish("ws/from-mqtt3", 1, false, "hello stomp"); !tok.WaitTimeout(waitTimeout) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	if m := recvSTOMP(t, sub); string(m.Body) != "hello stomp" || m.Destination != "/topic/ws.from-mqtt3" {
		t.Fatalf("STOMP got %q at %s", m.Body, m.Destination)
	}
	if _, err := m5.Publish(testCtx(t), &paho.Publish{Topic: "ws/from-mqtt5", QoS: 1, Payload: []byte("v5"),
		Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "k", Value: "v"}}}}); err != nil {
		t.Fatal(err)
	}
	if m := recvSTOMP(t, sub); string(m.Body) != "v5" || m.Header.Get("k") != "v" {
		t.Fatalf("STOMP got %q, headers %v", m.Body, m.Header)
	}
}

// TestSTOMPFramesAcrossWebSocketMessages sends a frame split across two
// WebSocket messages, then two frames packed into one.
func TestSTOMPFramesAcrossWebSocketMessages(t *testing.T) {
	b := startInProcess(t, nil)
	c := dialWS(t, "ws://"+b.addr(t, "websocket")+"/stomp", &websocket.DialOptions{Subprotocols: []string{"v12.stomp"}})
	if c.Subprotocol() != "v12.stomp" {
		t.Errorf("subprotocol %q", c.Subprotocol())
	}
	r := &wsFrames{t: t, c: c}
	r.send("CONNECT\naccept-version:1.2\nhost:/\nhe", "art-beat:0,0\n\n\x00")
	if f := r.next(); !strings.HasPrefix(f, "CONNECTED\n") || !strings.Contains(f, "version:1.2\n") {
		t.Fatalf("got %q, want CONNECTED", f)
	}
	r.send("SUBSCRIBE\nid:s1\ndestination:/topic/raw\nreceipt:r1\n\n\x00" +
		"SEND\ndestination:/topic/raw\nreceipt:r2\ncontent-type:text/plain\n\nhello\x00")
	var got []string
	for range 3 {
		f := r.next()
		switch {
		case strings.HasPrefix(f, "RECEIPT\n"):
			got = append(got, "receipt "+header(f, "receipt-id"))
		case strings.HasPrefix(f, "MESSAGE\n"):
			got = append(got, "message "+f[strings.Index(f, "\n\n")+2:])
		default:
			t.Fatalf("unexpected frame %q", f)
		}
	}
	slices.Sort(got) // the MESSAGE may come before the second RECEIPT
	if want := []string{"message hello", "receipt r1", "receipt r2"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	// Bad input gets the same ERROR as over TCP: a body over
	// stomp.max_frame_body is refused before it is read.
	r.send("SEND\ndestination:/topic/raw\ncontent-length:999999999\n\n")
	if f := r.next(); !strings.HasPrefix(f, "ERROR\n") || !strings.Contains(header(f, "message"), "body") {
		t.Fatalf("got %q, want an ERROR about the body size", f)
	}
}

// wsFrames reads STOMP frames from a WebSocket, whatever the message
// boundaries.
type wsFrames struct {
	t   *testing.T
	c   *websocket.Conn
	buf []byte
}

func (r *wsFrames) send(msgs ...string) {
	r.t.Helper()
	for _, m := range msgs {
		if err := r.c.Write(testCtx(r.t), websocket.MessageText, []byte(m)); err != nil {
			r.t.Fatal(err)
		}
	}
}

// next returns the next frame without its NUL, skipping heart-beats.
func (r *wsFrames) next() string {
	r.t.Helper()
	for i := 0; i < 1000; i++ {
		r.buf = bytes.TrimLeft(r.buf, "\r\n")
		if j := bytes.IndexByte(r.buf, 0); j >= 0 {
			f := string(r.buf[:j])
			r.buf = r.buf[j+1:]
			return f
		}
		typ, m, err := r.c.Read(testCtx(r.t))
		if err != nil {
			r.t.Fatalf("read: %v", err)
		}
		if typ != websocket.MessageText {
			r.t.Fatalf("UTF-8 frames came in a %v message", typ)
		}
		r.buf = append(r.buf, m...)
	}
	r.t.Fatal("no complete frame in 1000 messages")
	return ""
}

// header returns the value of a header line of frame f.
func header(f, name string) string {
	head, _, _ := strings.Cut(f, "\n\n")
	for _, l := range strings.Split(head, "\n")[1:] {
		if k, v, ok := strings.Cut(l, ":"); ok && k == name {
			return v
		}
	}
	return ""
}

// TestWebSocketRefusals covers the handshakes that are refused and the
// message size limit.
func TestWebSocketRefusals(t *testing.T) {
	cfg := writeConfig(t, "websocket:\n  allowed_origins: [\"*.example.test\"]\n  max_message_size: 1KiB\n")
	b := startInProcess(t, nil, "--config", cfg)
	addr := b.addr(t, "websocket")
	ws := "ws://" + addr
	mqttSub := []string{"mqtt"}
	origin := func(o string) http.Header { return http.Header{"Origin": {o}} }
	tests := []struct {
		name string
		path string
		opts *websocket.DialOptions
		want int
	}{
		{"mqtt without subprotocol", "/mqtt", nil, 400},
		{"mqtt with a STOMP subprotocol", "/mqtt", &websocket.DialOptions{Subprotocols: []string{"v12.stomp"}}, 400},
		{"mqttv3.1", "/mqtt", &websocket.DialOptions{Subprotocols: []string{"mqttv3.1"}}, 101},
		{"stomp without subprotocol", "/stomp", nil, 101},
		{"stomp with the MQTT subprotocol", "/stomp", &websocket.DialOptions{Subprotocols: mqttSub}, 400},
		{"foreign origin", "/mqtt", &websocket.DialOptions{Subprotocols: mqttSub, HTTPHeader: origin("http://evil.test")}, 403},
		{"foreign origin on stomp", "/stomp", &websocket.DialOptions{HTTPHeader: origin("https://evil.test")}, 403},
		{"same origin", "/mqtt", &websocket.DialOptions{Subprotocols: mqttSub, HTTPHeader: origin("http://" + addr)}, 101},
		{"allowed origin", "/stomp", &websocket.DialOptions{HTTPHeader: origin("https://app.example.test")}, 101},
		{"unknown path", "/amqp", nil, 404},
	}
	for _, tt := range tests {
		if got := wsStatus(t, ws+tt.path, tt.opts); got != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, got, tt.want)
		}
	}

	// A message over websocket.max_message_size closes the connection with
	// 1009, on either endpoint: here the start of a 1025-byte frame or
	// packet, which the protocol servers wait for the rest of.
	stompFrame := append([]byte("SEND\ndestination:/topic/big\n\n"), bytes.Repeat([]byte("a"), 1025)...)
	mqttPacket := append([]byte{0x10, 0xfe, 0x07}, bytes.Repeat([]byte{0}, 1022)...) // CONNECT, 1022 bytes long
	for _, ep := range []struct {
		path string
		subs []string
		typ  websocket.MessageType
		msg  []byte
	}{{"/stomp", nil, websocket.MessageText, stompFrame[:1025]}, {"/mqtt", mqttSub, websocket.MessageBinary, mqttPacket}} {
		c := dialWS(t, ws+ep.path, &websocket.DialOptions{Subprotocols: ep.subs})
		if err := c.Write(testCtx(t), ep.typ, ep.msg); err != nil {
			t.Fatal(err)
		}
		// STOMP says why in an ERROR frame first.
		if code := closeStatus(t, c); code != websocket.StatusMessageTooBig {
			t.Errorf("%s: close status %v after a too large message, want 1009", ep.path, code)
		}
	}

	// MQTT in a text message closes the connection with 1003
	// [MQTT-6.0.0-1].
	c := dialWS(t, ws+"/mqtt", &websocket.DialOptions{Subprotocols: mqttSub})
	if err := c.Write(testCtx(t), websocket.MessageText, []byte("\x10")); err != nil {
		t.Fatal(err)
	}
	if code := closeStatus(t, c); code != websocket.StatusUnsupportedData {
		t.Errorf("close status %v after MQTT in a text message, want 1003", code)
	}
}

// closeStatus reads from c until the server's close frame arrives.
func closeStatus(t *testing.T, c *websocket.Conn) websocket.StatusCode {
	t.Helper()
	for i := 0; i < 100; i++ {
		if _, _, err := c.Read(testCtx(t)); err != nil {
			return websocket.CloseStatus(err)
		}
	}
	t.Fatal("no close frame in 100 messages")
	return 0
}

// TestWebSocketShutdown stops the broker with WebSocket clients
// connected, one of which never answers the closing handshake: the
// others are told the server is going away, and the broker still stops.
func TestWebSocketShutdown(t *testing.T) {
	b := startInProcess(t, nil)
	addr := b.addr(t, "websocket")
	c := dialWS(t, "ws://"+addr+"/mqtt", &websocket.DialOptions{Subprotocols: []string{"mqtt"}})
	// CONNECT (MQTT 3.1.1, clean session, keepalive 60s, client id "s").
	connect := []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 1, 's'}
	if err := c.Write(testCtx(t), websocket.MessageBinary, connect); err != nil {
		t.Fatal(err)
	}
	if _, m, err := c.Read(testCtx(t)); err != nil || len(m) < 4 || m[0] != 0x20 || m[3] != 0 {
		t.Fatalf("CONNACK: % x %v", m, err)
	}
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	fmt.Fprintf(silent, "GET /stomp HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", addr)
	// The 101 response proves the silent connection is upgraded.
	resp := make([]byte, 12)
	if err := silent.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := silent.Read(resp); err != nil || string(resp) != "HTTP/1.1 101" {
		t.Fatalf("silent client handshake: %q %v", resp, err)
	}

	closed := make(chan error, 1)
	go func() { _, _, err := c.Read(context.Background()); closed <- err }()
	b.stop(t)
	select {
	case err := <-closed:
		if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway {
			t.Errorf("client saw %v, want close status 1001", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("client not closed")
	}
}
