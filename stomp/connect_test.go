package stomp_test

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/protocol"
	"github.com/tandem-mq/tandem/stomp"
)

// STOMP 1.2 §CONNECT or STOMP Frame, §Protocol Negotiation: go-stomp's
// client offers 1.0,1.1,1.2 and gets the highest; CONNECT and STOMP both
// connect; CONNECTED names version, server and session.
func TestConnectNegotiatesHighestVersion(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	for _, tc := range []struct {
		name string
		opts []func(*gostomp.Conn) error
		want gostomp.Version
	}{
		{"all", nil, gostomp.V12},
		{"stomp-command", []func(*gostomp.Conn) error{gostomp.ConnOpt.UseStomp}, gostomp.V12},
		{"1.1", []func(*gostomp.Conn) error{gostomp.ConnOpt.AcceptVersion(gostomp.V10, gostomp.V11)}, gostomp.V11},
		{"1.0", []func(*gostomp.Conn) error{gostomp.ConnOpt.AcceptVersion(gostomp.V10)}, gostomp.V10},
		{"host", []func(*gostomp.Conn) error{gostomp.ConnOpt.Host("vhost-a")}, gostomp.V12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := br.dial(tc.opts...)
			if c.Version() != tc.want {
				t.Fatalf("version %s, want %s", c.Version(), tc.want)
			}
			if c.Server() != "tandem" || c.Session() == "" {
				t.Fatalf("server %q session %q", c.Server(), c.Session())
			}
			// The connection works at the negotiated version.
			sub, err := c.Subscribe("/queue/neg-"+tc.name, gostomp.AckClient)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Send("/queue/neg-"+tc.name, "text/plain", []byte("x"), gostomp.SendOpt.Receipt); err != nil {
				t.Fatal(err)
			}
			if err := c.Ack(recv(t, sub)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// STOMP 1.2 §Protocol Negotiation: "If the accept-version header is
// missing, it means that the clients only supports version 1.0"; a 1.0
// CONNECTED has no heart-beat header (heart-beating is 1.1+). The host
// header is accepted and optional.
func TestConnectWithoutAcceptVersionIs10(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	rc := br.raw()
	rc.send("CONNECT", nil, "login:guest", "passcode:guest")
	f := rc.read()
	if f.Command != "CONNECTED" || f.Get("version") != "1.0" {
		t.Fatalf("got %s %v", f.Command, f.Headers)
	}
	if _, ok := f.Lookup("heart-beat"); ok {
		t.Fatalf("1.0 CONNECTED has a heart-beat header: %v", f.Headers)
	}
	rc2 := br.raw()
	rc2.send("STOMP", nil, "accept-version:1.1,1.2,2.0", "host:example.org")
	if f := rc2.read(); f.Command != "CONNECTED" || f.Get("version") != "1.2" {
		t.Fatalf("got %s %v", f.Command, f.Headers)
	}
}

// STOMP 1.2 §Protocol Negotiation: with no version in common "the server
// MUST respond with an ERROR frame ... it SHOULD set the version header
// ... to the versions it supports" and close.
func TestConnectNoCommonVersion(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	rc := br.raw()
	rc.send("CONNECT", nil, "accept-version:2.0,3.1", "host:x")
	f := rc.expectError("supported protocol versions")
	if v := f.Get("version"); v != "1.0,1.1,1.2" {
		t.Fatalf("version header %q", v)
	}
	rc.expectClosed(5 * time.Second)
}

// STOMP 1.2 §CONNECT or STOMP Frame (login, passcode): credentials go to
// Config.Auth; a refusal is an ERROR and a closed connection.
func TestConnectAuthenticate(t *testing.T) {
	br := startBroker(t, engine.Config{}, func(c *stomp.Config) {
		c.Auth = newAuth(t, protocol.AnonymousNone, "alice", "s3cret")
	})
	br.dial(gostomp.ConnOpt.Login("alice", "s3cret"))
	_, err := gostomp.Dial("tcp", br.addr, gostomp.ConnOpt.Login("alice", "wrong"), gostomp.ConnOpt.HeartBeat(0, 0))
	var se gostomp.Error
	if !errors.As(err, &se) || !strings.Contains(se.Message, "authentication failed") {
		t.Fatalf("bad login: err %v", err)
	}
	rc := br.raw()
	rc.send("CONNECT", nil, "accept-version:1.2", "host:x", "login:bob", "passcode:nope", "receipt:r1")
	if f := rc.expectError("authentication failed"); f.Get("receipt-id") != "r1" {
		t.Fatalf("ERROR for a frame with a receipt header has receipt-id %q", f.Get("receipt-id"))
	}
	rc.expectClosed(5 * time.Second)
	// No login at all: anonymous, which this configuration refuses.
	rc = br.raw()
	rc.send("CONNECT", nil, "accept-version:1.2", "host:x")
	rc.expectError("authentication failed")
}

// STOMP 1.2 §Value Encoding: "The CONNECT and CONNECTED frames do not
// escape ... octets": a backslash in a CONNECT header reaches the
// authenticator as sent (the user is named with the backslashes), and the
// server name in CONNECTED is not escaped.
func TestConnectHeadersNotEscaped(t *testing.T) {
	br := startBroker(t, engine.Config{}, func(c *stomp.Config) {
		c.ServerName = `tandem\test`
		c.Auth = newAuth(t, protocol.AnonymousNone, `a\cb\\c`, "p")
	})
	rc := br.raw()
	rc.send("CONNECT", nil, "accept-version:1.2", "host:x", `login:a\cb\\c`, "passcode:p")
	f := rc.read()
	if f.Command != "CONNECTED" {
		t.Fatalf("got %s %v: the login did not arrive as sent", f.Command, f.Headers)
	}
	if s := f.Get("server"); s != `tandem\test` {
		t.Fatalf("CONNECTED server header %q, want it unescaped", s)
	}
}

// STOMP 1.2 §Heart-beating: CONNECTED carries the server's "sx,sy"; each
// side's interval is the larger of what one can send and the other wants;
// a 0 on either side turns that direction off.
func TestHeartBeatNegotiation(t *testing.T) {
	br := startBroker(t, engine.Config{}, func(c *stomp.Config) {
		c.HeartBeatSend = 200 * time.Millisecond
		c.HeartBeatRecv = 300 * time.Millisecond
	})
	for _, tc := range []struct{ client, want string }{
		{"0,0", "0,0"},         // client neither sends nor wants: nothing either way
		{"100,100", "200,300"}, // server sends every max(200,100), wants every max(300,100)
		{"1000,50", "200,1000"},
		{"0,1000", "1000,0"},
		{"500,0", "0,500"},
	} {
		rc := br.raw()
		rc.send("CONNECT", nil, "accept-version:1.2", "host:x", "heart-beat:"+tc.client)
		f := rc.read()
		if f.Command != "CONNECTED" {
			t.Fatalf("%s: got %s", tc.client, f.Command)
		}
		if hb := f.Get("heart-beat"); hb != tc.want {
			t.Errorf("client heart-beat %s: CONNECTED heart-beat %q, want %q", tc.client, hb, tc.want)
		}
		rc.nc.Close()
	}
	rc := br.raw()
	rc.send("CONNECT", nil, "accept-version:1.2", "host:x", "heart-beat:x,1")
	rc.expectError("heart-beat")
}

// STOMP 1.2 §Heart-beating: "If the receiver does not receive any new data
// within the time window ... it MAY consider the connection as dead". A
// client that promised heart-beats and then goes silent is disconnected
// after the negotiated interval plus grace, not before.
func TestHeartBeatEnforced(t *testing.T) {
	br := startBroker(t, engine.Config{}, func(c *stomp.Config) {
		c.HeartBeatSend = 0
		c.HeartBeatRecv = 200 * time.Millisecond
	})
	rc := br.raw()
	rc.send("CONNECT", nil, "accept-version:1.2", "host:x", "heart-beat:200,0")
	start := time.Now()
	if f := rc.read(); f.Command != "CONNECTED" || f.Get("heart-beat") != "0,200" {
		t.Fatalf("got %s %v", f.Command, f.Headers)
	}
	f, err := rc.readFrame(10 * time.Second)
	if err != nil {
		t.Fatalf("want an ERROR before the close, got %v", err)
	}
	if f.Command != "ERROR" || !strings.Contains(f.Get("message"), "heart-beat") {
		t.Fatalf("got %s %v", f.Command, f.Headers)
	}
	rc.expectClosed(5 * time.Second)
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Fatalf("closed after %v, before the negotiated interval", el)
	}

	// A client that keeps its promise stays connected past that time.
	rc2 := br.raw()
	rc2.send("CONNECT", nil, "accept-version:1.2", "host:x", "heart-beat:200,0")
	rc2.read()
	deadline := time.Now().Add(2 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		<-tick.C
		rc2.write("\n")
	}
	rc2.send("SEND", []byte("alive"), "destination:/queue/hb", "receipt:r")
	if f := rc2.read(); f.Command != "RECEIPT" {
		t.Fatalf("got %s %v", f.Command, f.Headers)
	}
}

// STOMP 1.2 §Heart-beating: the server sends an EOL when it has sent
// nothing else for the negotiated interval.
func TestHeartBeatSentWhenQuiet(t *testing.T) {
	br := startBroker(t, engine.Config{}, func(c *stomp.Config) {
		c.HeartBeatSend = 100 * time.Millisecond
		c.HeartBeatRecv = 0
	})
	rc := br.raw()
	rc.send("CONNECT", nil, "accept-version:1.2", "host:x", "heart-beat:0,100")
	if f := rc.read(); f.Get("heart-beat") != "100,0" {
		t.Fatalf("CONNECTED %v", f.Headers)
	}
	rc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := 0; i < 3; i++ {
		b, err := rc.br.ReadByte()
		if err != nil {
			t.Fatalf("heart-beat %d: %v", i, err)
		}
		if b != '\n' {
			t.Fatalf("heart-beat %d: got %q", i, b)
		}
	}

	// go-stomp's client, asking for server heart-beats and sending none,
	// stays connected through several of its read timeouts.
	// The client gives up after 100 ms + 400 ms without a byte: room for
	// a loaded CI machine (50 ms failed there once), while 2 s of quiet
	// still spans four of its read timeouts.
	c := br.dial(gostomp.ConnOpt.HeartBeat(0, 100*time.Millisecond), gostomp.ConnOpt.HeartBeatError(400*time.Millisecond))
	sub, err := c.Subscribe("/queue/hb2", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	timer := time.NewTimer(2 * time.Second)
	<-timer.C // several client read timeouts, none of them tripped
	if err := c.Send("/queue/hb2", "", []byte("x"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	recv(t, sub)
}

// STOMP 1.2 §Heart-beating: "0" means no heart-beats; a client that
// negotiated none may stay idle. (The reader's pending Read used to keep
// the connect timeout as its deadline, cutting such clients off.)
func TestIdleWithoutHeartBeatsOutlivesConnectTimeout(t *testing.T) {
	br := startBroker(t, engine.Config{}, func(c *stomp.Config) {
		c.ConnectTimeout = 200 * time.Millisecond
	})
	rc := br.rawConnect("accept-version:1.2", "host:x", "heart-beat:0,0")
	// Idle well past the connect timeout: no frame may arrive, and the
	// connection must still be open afterwards.
	if f, err := rc.readFrame(700 * time.Millisecond); err == nil {
		t.Fatalf("unexpected %s %v %q", f.Command, f.Headers, f.Body)
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("connection ended while idle: %v", err)
	}
	rc.send("SEND", []byte("late"), "destination:/queue/idle", "receipt:r")
	if f := rc.read(); f.Command != "RECEIPT" {
		t.Fatalf("got %s %v %q", f.Command, f.Headers, f.Body)
	}
}

// STOMP 1.2 §Connecting: the connect timeout still closes a client that
// never sends CONNECT.
func TestConnectTimeout(t *testing.T) {
	br := startBroker(t, engine.Config{}, func(c *stomp.Config) {
		c.ConnectTimeout = 200 * time.Millisecond
	})
	rc := br.raw()
	rc.expectError("connect timeout")
	rc.expectClosed(5 * time.Second)
}
