package stomp_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	gostomp "github.com/go-stomp/stomp/v3"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/protocol"
	"github.com/tandem-mq/tandem/stomp"
	"golang.org/x/crypto/bcrypt"
)

// newAuth returns an authenticator with one user (no rules unless given:
// user, password, then publish and subscribe rule lists).
func newAuth(t *testing.T, anon protocol.AnonymousMode, user, password string, rules ...[]string) *protocol.Authenticator {
	t.Helper()
	// The lowest cost keeps tests fast (bcrypt is slow on purpose, more
	// so under -race); the broker's own hashes use the default.
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	var rs protocol.Rules
	if len(rules) == 2 {
		if rs, err = protocol.ParseRules(rules[0], rules[1]); err != nil {
			t.Fatal(err)
		}
	}
	a, err := protocol.NewAuthenticator([]protocol.User{{Name: user, Hash: hash, Rules: rs}}, anon, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Permissions: a user limited to its own topics and one queue gets an
// ERROR for a SEND or SUBSCRIBE outside them, and nothing refused is
// published or subscribed; what is allowed works.
func TestPermissions(t *testing.T) {
	br := startBroker(t, engine.Config{}, func(c *stomp.Config) {
		c.Auth = newAuth(t, protocol.AnonymousNone, "alice", "pw",
			[]string{"sensors/%u/#", "queue:jobs"},
			[]string{"/topic/sensors.*.temp", "queue:jobs"})
	})
	login := gostomp.ConnOpt.Login("alice", "pw")
	c := br.dial(login)
	sub, err := c.Subscribe("/topic/sensors.*.temp", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Send("/topic/sensors.alice.temp", "", []byte("21"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	if m := <-sub.C; m.Err != nil || string(m.Body) != "21" {
		t.Fatalf("allowed publish: %v", m)
	}
	if err := c.Send("/queue/jobs", "", []byte("job"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}

	refused := []struct {
		name  string
		frame []string
	}{
		{"send to another user's topic", []string{"SEND", "destination:/topic/sensors.bob.temp", "receipt:r"}},
		{"send to another queue", []string{"SEND", "destination:/queue/other", "receipt:r"}},
		{"subscribe to everything", []string{"SUBSCRIBE", "destination:/topic/#", "id:s1", "receipt:r"}},
		{"consume another queue", []string{"SUBSCRIBE", "destination:/queue/other", "id:s2", "receipt:r"}},
	}
	for _, r := range refused {
		rc := br.raw()
		rc.send("CONNECT", nil, "accept-version:1.2", "host:x", "login:alice", "passcode:pw")
		if f := rc.read(); f.Command != "CONNECTED" {
			t.Fatalf("%s: CONNECT got %s", r.name, f.Command)
		}
		rc.send(r.frame[0], []byte("x"), r.frame[1:]...)
		rc.expectError("not authorized")
		rc.expectClosed(5 * time.Second)
	}
	if q, err := br.b.QueueInfo("jobs"); err != nil || q.Messages != 1 {
		t.Fatalf("jobs: %+v %v, want the one allowed message", q, err)
	}
	if _, err := br.b.QueueInfo("other"); !errors.Is(err, engine.ErrNoQueue) {
		t.Fatalf("a refused SEND created queue other: %v", err)
	}
	// Nothing from the refused SEND reached the subscriber: the next
	// message is a later allowed one.
	if err := c.Send("/topic/sensors.alice.temp", "", []byte("22"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	if m := <-sub.C; m.Err != nil || string(m.Body) != "22" {
		t.Fatalf("got %v, want 22", m)
	}
}

// With anonymous access "loopback" (the default), a client without a
// login connects from 127.0.0.1 with every permission.
func TestAnonymousLoopback(t *testing.T) {
	br := startBroker(t, engine.Config{}, func(c *stomp.Config) {
		c.Auth = newAuth(t, protocol.AnonymousLoopback, "alice", "pw", []string{"a"}, []string{"a"})
	})
	c := br.dial()
	if err := c.Send("/queue/anything", "", []byte("x"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	_, err := gostomp.Dial("tcp", br.addr, gostomp.ConnOpt.Login("alice", "bad"), gostomp.ConnOpt.HeartBeat(0, 0))
	if err == nil || !strings.Contains(err.Error(), "authentication failed") {
		t.Fatalf("a wrong password from loopback: %v", err)
	}
}

// Over a connection limit, CONNECT gets an ERROR naming the limit; the slot
// comes back when the connection ends.
func TestConnectionLimit(t *testing.T) {
	lim := protocol.NewConnLimiter(protocol.ConnLimits{MaxConnections: 1}, nil)
	br := startBroker(t, engine.Config{}, func(c *stomp.Config) { c.Limiter = lim })
	c := br.dial()
	rc := br.raw()
	rc.send("CONNECT", nil, "accept-version:1.2", "host:x")
	rc.expectError("too many connections")
	rc.expectClosed(5 * time.Second)
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the slot to come back", func() bool { return lim.Open() == 0 })
	br.dial()
}

// STOMP 1.2 §DISCONNECT: once the client has the RECEIPT of its
// DISCONNECT it is gone. Its subscriptions have ended by then, so a
// message published after the RECEIPT waits (here, in the queue) instead
// of being sent to the closing connection and coming back redelivered.
func TestDisconnectReceiptAfterSubscriptionsEnd(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	if err := br.b.DeclareQueue("d", engine.QueueOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		rc := br.rawConnect("accept-version:1.2", "host:x")
		rc.send("SUBSCRIBE", nil, "destination:/queue/d", "id:s", "ack:client-individual")
		rc.send("DISCONNECT", nil, "receipt:bye")
		if f := rc.read(); f.Command != "RECEIPT" || f.Get("receipt-id") != "bye" {
			t.Fatalf("round %d: got %s %v", i, f.Command, f.Headers)
		}
		if q, err := br.b.QueueInfo("d"); err != nil || q.Consumers != 0 {
			t.Fatalf("round %d: after the DISCONNECT RECEIPT the queue still has %d consumers (%v)", i, q.Consumers, err)
		}
	}
}

// Temporary queues need no permission: a user with no queue rule for them
// may send to its own (/temp-queue/) and reply to another's (the
// /queue/$tmp/... reply-to it was given).
func TestTempQueuesNeedNoPermission(t *testing.T) {
	br := startBroker(t, engine.Config{}, func(c *stomp.Config) {
		c.Auth = newAuth(t, protocol.AnonymousNone, "alice", "pw", []string{"queue:jobs"}, []string{"queue:jobs"})
	})
	login := gostomp.ConnOpt.Login("alice", "pw")
	requester := br.dial(login)
	if err := requester.Send("/queue/jobs", "", []byte("req"), gostomp.SendOpt.Receipt, gostomp.SendOpt.Header("reply-to", "/temp-queue/r")); err != nil {
		t.Fatalf("send with a temporary reply-to: %v", err)
	}
	worker := br.dial(login)
	sub, err := worker.Subscribe("/queue/jobs", gostomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	m := recv(t, sub)
	replyTo := m.Header.Get("reply-to")
	if !strings.HasPrefix(replyTo, "/queue/$tmp/") {
		t.Fatalf("reply-to %q", replyTo)
	}
	if err := worker.Send(replyTo, "", []byte("answer"), gostomp.SendOpt.Receipt); err != nil {
		t.Fatalf("reply to a temporary queue: %v", err)
	}
}
