package stomp_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/protocol"
)

// TestConnectionsAndClose lists connections as an operator sees them and
// closes one: it gets an ERROR saying why, and its unacked message goes
// back to its queue.
func TestConnectionsAndClose(t *testing.T) {
	br := startBroker(t, engine.Config{}, nil)
	rc := br.rawConnect("accept-version:1.2", "login:alice", "client-id:worker-1")
	rc.send("SUBSCRIBE", nil, "id:s1", "destination:/queue/jobs", "ack:client-individual")
	rc.send("SUBSCRIBE", nil, "id:s2", "destination:/topic/a.b", "receipt:r1")
	rc.readUntil("RECEIPT")
	br.raw() // not CONNECTed: counted, not listed

	conns := br.srv.Connections()
	if len(conns) != 1 {
		t.Fatalf("Connections() = %+v, want one", conns)
	}
	c := conns[0]
	if c.Protocol != "stomp" || c.ID == "" || c.Transport != protocol.TransportTCP || c.User != "alice" ||
		c.ClientID != "worker-1" || c.Version != "1.2" || c.Remote != rc.nc.LocalAddr().String() ||
		!slices.Equal(c.Subscriptions, []string{"/queue/jobs", "/topic/a.b"}) {
		t.Fatalf("connection = %+v", c)
	}
	waitFor(t, "both connections counted", func() bool {
		return br.srv.ConnCounts()[0] == protocol.TransportCount{Transport: protocol.TransportTCP, Open: 2, Opened: 2}
	})

	// One unacked message held by the connection.
	pub := br.dial()
	if err := pub.Send("/queue/jobs", "", []byte("job"), nil); err != nil {
		t.Fatal(err)
	}
	if f := rc.read(); f.Command != "MESSAGE" {
		t.Fatalf("got %s", f.Command)
	}
	rc.send("UNSUBSCRIBE", nil, "id:s2", "receipt:r2")
	rc.readUntil("RECEIPT")
	if got := br.srv.Connections(); len(got) != 2 || !slices.Equal(got[0].Subscriptions, []string{"/queue/jobs"}) {
		t.Fatalf("after UNSUBSCRIBE and a second client: %+v", got)
	}

	if err := br.srv.CloseConnection(c.ID); err != nil {
		t.Fatal(err)
	}
	rc.expectError("connection closed by an administrator")
	rc.expectClosed(5 * time.Second)
	waitFor(t, "the job back in its queue", func() bool {
		qi := br.queueInfo("jobs")
		return qi.Unacked == 0 && qi.Messages == 1
	})
	if err := br.srv.CloseConnection(c.ID); !errors.Is(err, protocol.ErrNoConnection) {
		t.Fatalf("closing it again: %v, want ErrNoConnection", err)
	}
	waitFor(t, "the closed connection no longer counted", func() bool {
		n := br.srv.ConnCounts()[0]
		return n.Open == 2 && n.Opened == 3 // pub and the raw one
	})
}
