package stomp_test

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/rs/zerolog"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/engine/memstore"
	"github.com/tandem-mq/tandem/stomp"
)

// bystander is a well-behaved client that must keep working while others
// misbehave (DESIGN.md "Bad input": "costs nothing to other clients").
type bystander struct {
	t   *testing.T
	c   *gostomp.Conn
	sub *gostomp.Subscription
	n   int
}

func (br *broker) bystander() *bystander {
	c := br.dial()
	sub, err := c.Subscribe("/queue/bystander", gostomp.AckClientIndividual)
	if err != nil {
		br.t.Fatal(err)
	}
	return &bystander{t: br.t, c: c, sub: sub}
}

// check does a round trip.
func (b *bystander) check() {
	b.t.Helper()
	b.n++
	body := fmt.Sprint("ok-", b.n)
	if err := b.c.Send("/queue/bystander", "", []byte(body), gostomp.SendOpt.Receipt); err != nil {
		b.t.Fatalf("bystander send: %v", err)
	}
	m := recv(b.t, b.sub)
	if string(m.Body) != body {
		b.t.Fatalf("bystander got %q, want %q", m.Body, body)
	}
	if err := b.c.Ack(m); err != nil {
		b.t.Fatal(err)
	}
}

// STOMP 1.2 §Connecting, §ERROR; DESIGN.md "Bad input": each bad input
// gets an ERROR with a message header and a closed connection, bounded
// (limits from Config.Limits, checked before buffering), while a second
// client keeps working.
func TestBadInput(t *testing.T) {
	br := startBroker(t, engine.Config{}, func(c *stomp.Config) {
		c.Limits = stomp.Limits{MaxLine: 1024, MaxHeaders: 16, MaxBody: 1 << 20}
	})
	by := br.bystander()
	connect := "CONNECT\naccept-version:1.2\nhost:x\n\n\x00"
	for _, tc := range []struct {
		name, input, want string
	}{
		{"send-before-connect", "SEND\ndestination:/queue/a\n\nx\x00", "expected CONNECT"},
		{"subscribe-before-connect", "SUBSCRIBE\ndestination:/queue/a\nid:1\n\n\x00", "expected CONNECT"},
		{"unknown-command", connect + "FROB\n\n\x00", "unknown command"},
		{"unknown-command-before-connect", "HELLO\n\n\x00", "expected CONNECT"},
		{"send-no-destination", connect + "SEND\ncontent-length:1\n\nx\x00", "no destination"},
		{"subscribe-no-destination", connect + "SUBSCRIBE\nid:1\n\n\x00", "no destination"},
		{"bad-destination", connect + "SEND\ndestination:/exchange/x\n\nx\x00", "destination"},
		{"huge-content-length", connect + "SEND\ndestination:/queue/a\ncontent-length:4000000000\n\n", "body too large"},
		{"bad-content-length", connect + "SEND\ndestination:/queue/a\ncontent-length:-1\n\nx\x00", "content-length"},
		{"long-header-line", connect + "SEND\ndestination:/queue/a\nx:" + strings.Repeat("y", 4096) + "\n\nx\x00", "line too long"},
		{"long-command-line", strings.Repeat("C", 5000) + "\n\n\x00", "line too long"},
		{"too-many-headers", connect + "SEND\ndestination:/queue/a\n" + strings.Repeat("h:v\n", 40) + "\nx\x00", "too many headers"},
		{"header-without-colon", connect + "SEND\ndestination:/queue/a\nnocolon\n\nx\x00", "malformed"},
		{"body-not-nul-terminated", connect + "SEND\ndestination:/queue/a\ncontent-length:1\n\nxy\x00", "malformed"},
		{"ack-unknown-subscription", connect + "ACK\nid:99-1\n\n\x00", "no open subscription"},
		{"commit-unknown-txn", connect + "COMMIT\ntransaction:nope\n\n\x00", "unknown transaction"},
		{"connect-twice", connect + connect, "already connected"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := br.raw()
			start := time.Now()
			rc.write(tc.input)
			f, err := rc.readFrame(5 * time.Second)
			if err == nil && f.Command == "CONNECTED" {
				f, err = rc.readFrame(5 * time.Second)
			}
			if err != nil {
				t.Fatalf("no ERROR: %v", err)
			}
			if f.Command != "ERROR" || f.Get("message") == "" {
				t.Fatalf("got %s %v %q", f.Command, f.Headers, f.Body)
			}
			if !strings.Contains(f.Get("message")+"\n"+string(f.Body), tc.want) {
				t.Fatalf("ERROR %v %q, want %q", f.Headers, f.Body, tc.want)
			}
			rc.expectClosed(5 * time.Second)
			if el := time.Since(start); el > 2*time.Second {
				t.Fatalf("took %v", el)
			}
			by.check()
		})
	}
	if qi := br.queueInfo("a"); qi.Messages != 0 {
		t.Fatalf("bad frames published %d messages", qi.Messages)
	}
	br.waitMessages("bystander", 0)
}

// DESIGN.md "Bad input": a frame cut off by a disconnect publishes
// nothing and ends that connection alone.
func TestFrameCutOffByDisconnect(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	by := br.bystander()
	base := br.srv.Conns()
	for _, partial := range []string{
		"SEND\ndestination:/queue/cut\ncontent-length:10\n\nabc",
		"SEND\ndestination:/queue/cut\n\nno-nul-yet",
		"SEND\ndestination:/queue/cut\nhal",
		"SEN",
	} {
		rc := br.rawConnect("accept-version:1.2", "host:x")
		rc.write(partial)
		rc.nc.Close()
		waitFor(t, "the cut connection to end", func() bool { return br.srv.Conns() == base })
		by.check()
	}
	if qi := br.queueInfo("cut"); qi.Messages != 0 {
		t.Fatalf("a cut frame was published: %+v", qi)
	}
}

// DESIGN.md "Bad input", STYLE.md trap 5: a client trickling one byte at a
// time cannot hold a connection: it is closed about FrameTimeout after its
// frame began, with an ERROR.
func TestSlowlorisFrameTimeout(t *testing.T) {
	const frameTimeout = 300 * time.Millisecond
	br := startBroker(t, engine.Config{}, func(c *stomp.Config) { c.FrameTimeout = frameTimeout })
	by := br.bystander()
	rc := br.rawConnect("accept-version:1.2", "host:x", "heart-beat:0,0")
	input := "SEND\ndestination:/queue/slow\n" + strings.Repeat("x:y\n", 100)
	stop := make(chan struct{})
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < len(input); i++ {
			if _, err := rc.nc.Write([]byte{input[i]}); err != nil {
				return
			}
			select {
			case <-tick.C:
			case <-stop:
				return
			}
		}
	}()
	defer func() { close(stop); <-done }()
	by.check() // during
	rc.expectError("frame timeout")
	rc.expectClosed(5 * time.Second)
	if el := time.Since(start); el < frameTimeout-50*time.Millisecond || el > frameTimeout+time.Second {
		t.Fatalf("closed after %v, want about %v", el, frameTimeout)
	}
	by.check() // after
}

// DESIGN.md "Bad input": an oversized content-length is refused before
// anything is allocated or read: the ERROR comes at once, not after the
// body (which never arrives).
func TestHugeContentLengthRefusedQuickly(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	rc := br.rawConnect("accept-version:1.2", "host:x")
	start := time.Now()
	rc.write("SEND\ndestination:/queue/a\ncontent-length:4000000000\n\n")
	rc.expectError("body too large")
	if el := time.Since(start); el > time.Second {
		t.Fatalf("ERROR after %v", el)
	}
	rc.expectClosed(5 * time.Second)
	runtime.ReadMemStats(&ms)
	if grown := ms.TotalAlloc - before; grown > 64<<20 {
		t.Fatalf("allocated %d bytes", grown)
	}
}

// DESIGN.md "Every goroutine has an owner who waits for it" (STYLE.md 9):
// after Server.Close every goroutine the server started has ended, with
// clients connected, subscribed and mid-frame at the time.
func TestCloseEndsEveryGoroutine(t *testing.T) {
	before := runtime.NumGoroutine()
	b, err := engine.Open(memstore.New(), engine.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := stomp.DefaultConfig()
	cfg.HeartBeatSend, cfg.HeartBeatRecv = 50*time.Millisecond, 50*time.Millisecond
	srv, err := stomp.NewServer(b, cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	br := &broker{t: t, b: b, srv: srv, addr: ln.Addr().String()}

	var raws []net.Conn
	for i := 0; i < 3; i++ {
		rc := br.rawConnect("accept-version:1.2", "host:x", "heart-beat:100,100")
		rc.send("SUBSCRIBE", nil, "destination:/queue/leak", "id:s", "ack:client", "receipt:r")
		rc.readUntil("RECEIPT")
		rc.send("SUBSCRIBE", nil, "destination:/topic/leak.#", "id:t", "receipt:r")
		rc.readUntil("RECEIPT")
		rc.send("SEND", []byte("m"), "destination:/queue/leak", "reply-to:/temp-queue/x", "receipt:r")
		rc.readUntil("RECEIPT")
		raws = append(raws, rc.nc)
	}
	half := br.raw()
	half.write("SEND\ndestination:/queue/leak\ncontent-length:100\n\nabc") // mid-frame
	idle := br.raw()                                                       // never connects
	waitFor(t, "5 connections", func() bool { return srv.Conns() == 5 })

	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != stomp.ErrServerClosed {
		t.Fatalf("Serve returned %v", err)
	}
	if n := srv.Conns(); n != 0 {
		t.Fatalf("%d connections after Close", n)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for _, nc := range append(raws, half.nc, idle.nc) {
		nc.Close()
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(5 * time.Second)
	for runtime.NumGoroutine() > before {
		select {
		case <-tick.C:
		case <-deadline:
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
	}
}
