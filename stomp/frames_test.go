package stomp_test

import (
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/tandem-mq/tandem/engine"
)

// STOMP 1.2 §SEND, §SUBSCRIBE, §UNSUBSCRIBE, §MESSAGE: go-stomp at each
// version sends, subscribes, receives and unsubscribes; after UNSUBSCRIBE
// (whose RECEIPT go-stomp waits for) nothing more arrives.
func TestSendSubscribeUnsubscribeEachVersion(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	for _, v := range []gostomp.Version{gostomp.V10, gostomp.V11, gostomp.V12} {
		t.Run(string(v), func(t *testing.T) {
			c := br.dial(gostomp.ConnOpt.AcceptVersion(v))
			dest := "/queue/ver-" + string(v)
			sub, err := c.Subscribe(dest, gostomp.AckAuto)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Send(dest, "application/json", []byte(`{"a":1}`), gostomp.SendOpt.Receipt,
				gostomp.SendOpt.Header("correlation-id", "c-1")); err != nil {
				t.Fatal(err)
			}
			m := recv(t, sub)
			if string(m.Body) != `{"a":1}` || m.ContentType != "application/json" || m.Header.Get("correlation-id") != "c-1" {
				t.Fatalf("got %q %q %v", m.Body, m.ContentType, m.Header)
			}
			br.unsubscribe(sub, dest[len("/queue/"):])
			if err := c.Send(dest, "", []byte("after"), gostomp.SendOpt.Receipt); err != nil {
				t.Fatal(err)
			}
			br.waitMessages(dest[len("/queue/"):], 1) // kept for a later consumer
		})
	}
}

// STOMP 1.2 §ACK ("id" matching the MESSAGE's ack header), STOMP 1.1 §ACK
// (message-id and subscription), STOMP 1.0 §ACK (message-id), STOMP 1.2
// and 1.1 §NACK: each version's ACK settles and its NACK returns the
// message.
func TestAckNackEachVersion(t *testing.T) {
	br := startBroker(t, engine.Config{Default: engine.Policy{RedeliveryDelay: time.Millisecond, RedeliveryMaxDelay: time.Millisecond}}, nil)
	for _, v := range []string{"1.0", "1.1", "1.2"} {
		t.Run(v, func(t *testing.T) {
			q := "acks-" + v
			rc := br.rawConnect("accept-version:"+v, "host:x")
			rc.send("SUBSCRIBE", nil, "destination:/queue/"+q, "id:s1", "ack:client-individual", "receipt:sub")
			rc.readUntil("RECEIPT")
			rc.send("SEND", []byte("one"), "destination:/queue/"+q)
			m := rc.read()
			if m.Command != "MESSAGE" || string(m.Body) != "one" || m.Get("subscription") != "s1" || m.Get("message-id") == "" {
				t.Fatalf("got %s %v %q", m.Command, m.Headers, m.Body)
			}
			_, hasAck := m.Lookup("ack")
			if hasAck != (v == "1.2") {
				t.Fatalf("%s MESSAGE ack header present=%v: %v", v, hasAck, m.Headers)
			}
			ackHdrs := func(m *rawFrame) []string {
				switch v {
				case "1.2":
					return []string{"id:" + m.Get("ack")}
				case "1.1":
					return []string{"message-id:" + m.Get("message-id"), "subscription:s1"}
				}
				return []string{"message-id:" + m.Get("message-id")}
			}
			if v != "1.0" {
				rc.send("NACK", nil, append(ackHdrs(m), "receipt:n")...)
				fs := rc.readUntil("RECEIPT")
				if len(fs) == 0 {
					m = rc.read()
				} else {
					m = fs[0]
				}
				if string(m.Body) != "one" || m.Get("redelivered") != "true" || m.Get("x-delivery-count") != "2" {
					t.Fatalf("after NACK got %v %q", m.Headers, m.Body)
				}
			}
			rc.send("ACK", nil, append(ackHdrs(m), "receipt:a")...)
			rc.readUntil("RECEIPT")
			br.waitMessages(q, 0)
		})
	}
	// STOMP 1.2 §NACK: NACK is not a 1.0 command.
	rc := br.rawConnect("accept-version:1.0")
	rc.send("NACK", nil, "message-id:1-1")
	rc.expectError("NACK")
	rc.expectClosed(5 * time.Second)
}

// STOMP 1.2 §Header receipt: "Any client frame other than CONNECT MAY
// specify a receipt header"; the server answers each with a RECEIPT whose
// receipt-id is that value, DISCONNECT's last, then closes.
func TestReceiptForEveryFrame(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	rc := br.rawConnect("accept-version:1.2", "host:x")
	steps := []struct {
		cmd   string
		body  []byte
		lines []string
	}{
		{"SUBSCRIBE", nil, []string{"destination:/queue/rcpt", "id:s", "ack:client"}},
		{"SEND", []byte("m"), []string{"destination:/queue/rcpt"}},
		{"BEGIN", nil, []string{"transaction:t1"}},
		{"SEND", []byte("in-tx"), []string{"destination:/queue/rcpt", "transaction:t1"}},
		{"ABORT", nil, []string{"transaction:t1"}},
		{"BEGIN", nil, []string{"transaction:t2"}},
		{"COMMIT", nil, []string{"transaction:t2"}},
	}
	for i, st := range steps {
		id := st.cmd + "-" + string(rune('a'+i))
		rc.send(st.cmd, st.body, append(st.lines, "receipt:"+id)...)
		want := map[string]bool{id: true}
		for len(want) > 0 {
			f := rc.read()
			switch f.Command {
			case "MESSAGE": // the ACK gets its own receipt
				rc.send("ACK", nil, "id:"+f.Get("ack"), "receipt:ack-"+id)
				want["ack-"+id] = true
			case "RECEIPT":
				if !want[f.Get("receipt-id")] {
					t.Fatalf("%s: unexpected receipt-id %q", st.cmd, f.Get("receipt-id"))
				}
				delete(want, f.Get("receipt-id"))
			default:
				t.Fatalf("%s: got %s %v %q", st.cmd, f.Command, f.Headers, f.Body)
			}
		}
	}
	rc.send("UNSUBSCRIBE", nil, "id:s", "receipt:u")
	if f := rc.read(); f.Get("receipt-id") != "u" {
		t.Fatalf("UNSUBSCRIBE: %s %v", f.Command, f.Headers)
	}
	rc.send("DISCONNECT", nil, "receipt:bye")
	if f := rc.read(); f.Command != "RECEIPT" || f.Get("receipt-id") != "bye" {
		t.Fatalf("DISCONNECT: %s %v", f.Command, f.Headers)
	}
	rc.expectClosed(5 * time.Second)

	// go-stomp's Disconnect waits for that receipt.
	c, err := gostomp.Dial("tcp", br.addr, gostomp.ConnOpt.HeartBeat(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Disconnect(); err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	waitFor(t, "connections to close", func() bool { return br.srv.Conns() == 0 })
}

// STOMP 1.2 §ERROR: "The ERROR frame SHOULD contain a message header ...
// the server MUST then close the connection"; a receipt header on the
// offending frame is echoed as receipt-id.
func TestErrorThenClose(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	rc := br.rawConnect("accept-version:1.2", "host:x")
	rc.send("SUBSCRIBE", nil, "destination:/nowhere/x", "id:1", "receipt:r9")
	f := rc.expectError("destination")
	if f.Get("receipt-id") != "r9" {
		t.Fatalf("ERROR receipt-id %q", f.Get("receipt-id"))
	}
	rc.expectClosed(5 * time.Second)
}

// STOMP 1.2 §Value Encoding: in 1.2 frames other than CONNECT/CONNECTED,
// \r \n \c \\ in headers are escapes, decoded on the way in and encoded on
// the way out; an undefined escape is a fatal error.
func TestHeaderEscaping12(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	rc := br.rawConnect("accept-version:1.2", "host:x")
	rc.send("SUBSCRIBE", nil, "destination:/queue/esc", "id:s\\c1", "receipt:r")
	rc.readUntil("RECEIPT")
	rc.send("SEND", []byte("b"), "destination:/queue/esc", `k\cx:v\nal\\ue\r`)
	m := rc.read()
	if m.Get("subscription") != `s\c1` {
		t.Fatalf("subscription %q, want it escaped", m.Get("subscription"))
	}
	if v, ok := m.Lookup(`k\cx`); !ok || v != `v\nal\\ue\r` {
		t.Fatalf("headers %v", m.Headers)
	}

	// go-stomp decodes it back.
	c := br.dial()
	sub, err := c.Subscribe("/queue/esc2", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send("/queue/esc2", "", []byte("x"), gostomp.SendOpt.Header("odd", "a:b\nc\\d")); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, sub).Header.Get("odd"); got != "a:b\nc\\d" {
		t.Fatalf("go-stomp round trip %q", got)
	}

	rc.send("SEND", []byte("b"), "destination:/queue/esc", `bad:\t`)
	rc.expectError("escape")
	rc.expectClosed(5 * time.Second)
}

// STOMP 1.1 §Value Encoding: 1.1 escapes \n \c \\ but has no \r: a CR in
// a value is sent as is.
func TestHeaderEscaping11(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	rc := br.rawConnect("accept-version:1.1", "host:x")
	rc.send("SUBSCRIBE", nil, "destination:/queue/esc11", "id:s", "receipt:r")
	rc.readUntil("RECEIPT")
	rc.send("SEND", []byte("b"), "destination:/queue/esc11", `k:a\cb\nc\\d`)
	m := rc.read()
	if v := m.Get("k"); v != `a\cb\nc\\d` {
		t.Fatalf("1.1 value %q", v)
	}
	rc.send("SEND", []byte("b"), "destination:/queue/esc11", `k:a\rb`)
	rc.expectError("escape")
}

// STOMP 1.0 has no escaping: backslashes are data, in and out, and a
// client that pipelines CONNECT and SEND gets 1.0 rules for the SEND too.
func TestHeaderNoEscaping10(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	rc := br.raw()
	// One write: the SEND is parsed right behind the CONNECT.
	rc.write("CONNECT\nlogin:x\n\n\x00SUBSCRIBE\ndestination:/queue/esc10\nid:s\nreceipt:r\n\n\x00" +
		"SEND\ndestination:/queue/esc10\nk:a\\tb\\c\n\nbody\x00")
	if f := rc.read(); f.Command != "CONNECTED" || f.Get("version") != "1.0" {
		t.Fatalf("got %s %v", f.Command, f.Headers)
	}
	fs := rc.readUntil("RECEIPT")
	if len(fs) == 0 {
		fs = append(fs, rc.read())
	}
	m := fs[0]
	if m.Command != "MESSAGE" || m.Get("k") != `a\tb\c` {
		t.Fatalf("got %s %v", m.Command, m.Headers)
	}
	// Read by a 1.2 client, the same value is escaped.
	c := br.dial()
	sub, err := c.Subscribe("/queue/esc10b", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	rc.send("SEND", []byte("x"), "destination:/queue/esc10b", `k:a\b`)
	if got := recv(t, sub).Header.Get("k"); got != `a\b` {
		t.Fatalf("1.0 -> 1.2 value %q", got)
	}
}

// STOMP 1.2 §Repeated Header Entries: "only the first header entry SHOULD
// be used as the value"; content-length bodies may contain NUL; the
// content-type passes through unchanged.
func TestRepeatedHeadersNULBodyContentType(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	c := br.dial()
	subA, err := c.Subscribe("/queue/first", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	rc := br.rawConnect("accept-version:1.2", "host:x")
	body := []byte("a\x00b\x00\x00c")
	rc.send("SEND", body, "destination:/queue/first", "destination:/queue/second",
		"content-type:application/octet-stream;x=1", "content-type:text/plain", "x:1", "x:2", "receipt:r")
	rc.readUntil("RECEIPT")
	m := recv(t, subA)
	if string(m.Body) != string(body) {
		t.Fatalf("body %q", m.Body)
	}
	if m.ContentType != "application/octet-stream;x=1" || m.Header.Get("x") != "1" {
		t.Fatalf("content-type %q x %q", m.ContentType, m.Header.Get("x"))
	}
	if n := br.queueInfo("second").Messages; n != 0 {
		t.Fatalf("second destination got %d messages", n)
	}
	// A body without content-length ends at the first NUL.
	rc.write("SEND\ndestination:/queue/first\n\nplain\x00")
	if m := recv(t, subA); string(m.Body) != "plain" {
		t.Fatalf("body %q", m.Body)
	}
}
