package mqtt_test

import (
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/protocol"
)

// TestConnectionsSessionsAndClose lists connections and persistent
// sessions as an operator sees them, and closes connections: an MQTT 5
// client gets DISCONNECT 0x98, a persistent session stays for its client.
func TestConnectionsSessionsAndClose(t *testing.T) {
	br := startBroker(t, options{})
	r5, _ := br.dialConnect("dev5", 5, func(pk *packets.Packet) {
		pk.Connect.UsernameFlag, pk.Connect.Username = true, []byte("alice")
	})
	r5.subscribe(1, "a/+", 1)
	r5.subscribe(2, "b/#", 0)
	r3, _ := br.dialRawClean("dev3", 4, false, packets.Properties{})
	r3.subscribe(1, "c/d", 1)

	conns := br.srv.Connections()
	if len(conns) != 2 {
		t.Fatalf("Connections() = %+v", conns)
	}
	c3, c5 := conns[0], conns[1]
	if c5.Protocol != "mqtt" || c5.ID != "dev5" || c5.ClientID != "dev5" || c5.User != "alice" || c5.Version != "5.0" ||
		c5.Transport != protocol.TransportTCP || c5.Remote != r5.nc.LocalAddr().String() || c5.Persistent ||
		!slices.Equal(c5.Subscriptions, []string{"a/+", "b/#"}) {
		t.Fatalf("MQTT 5 connection = %+v", c5)
	}
	if c3.ID != "dev3" || c3.Version != "3.1.1" || !c3.Persistent || !slices.Equal(c3.Subscriptions, []string{"c/d"}) {
		t.Fatalf("MQTT 3.1.1 connection = %+v", c3)
	}
	ss := br.srv.Sessions()
	if len(ss) != 1 || ss[0].ClientID != "dev3" || !ss[0].Connected || ss[0].Queue != "$mqtt/dev3" ||
		!ss[0].ExpiresAt.IsZero() || len(ss[0].Filters) != 1 || ss[0].Filters[0].Filter != "c/d" || ss[0].Filters[0].QoS != 1 {
		t.Fatalf("Sessions() = %+v", ss)
	}
	if n := br.srv.ConnCounts()[0]; n != (protocol.TransportCount{Transport: protocol.TransportTCP, Open: 2, Opened: 2}) {
		t.Fatalf("TCP connections %+v", n)
	}

	if err := br.srv.CloseConnection("dev5"); err != nil {
		t.Fatal(err)
	}
	r5.expect(packets.Disconnect, 0, packets.ErrAdministrativeAction.Code)
	if _, err := r5.tryRead(); !errors.Is(err, io.EOF) {
		t.Fatalf("after DISCONNECT: %v, want the connection closed", err)
	}
	if err := br.srv.CloseConnection("dev3"); err != nil {
		t.Fatal(err)
	}
	if _, err := r3.tryRead(); err == nil {
		t.Fatal("MQTT 3.1.1 connection still open")
	}
	waitUntil(t, "both connections gone", func() bool { return len(br.srv.Connections()) == 0 })
	waitUntil(t, "no connection counted", func() bool { return br.srv.ConnCounts()[0].Open == 0 })
	waitUntil(t, "the session released", func() bool {
		ss := br.srv.Sessions()
		return len(ss) == 1 && !ss[0].Connected && !ss[0].ExpiresAt.IsZero()
	})
	if err := br.srv.CloseConnection("dev3"); !errors.Is(err, protocol.ErrNoConnection) {
		t.Fatalf("closing a gone client: %v, want ErrNoConnection", err)
	}
}
