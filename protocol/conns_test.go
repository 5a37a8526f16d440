package protocol

import (
	"crypto/tls"
	"net"
	"testing"
)

func TestTransportAndConnCounter(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	conns := map[string]net.Conn{
		TransportTCP:       a,
		TransportTLS:       tls.Server(a, &tls.Config{}),
		TransportWebSocket: &wsConn{raw: a},
		TransportWSS:       &wsConn{raw: tls.Server(a, &tls.Config{})},
	}
	var c ConnCounter
	for want, nc := range conns {
		if got := Transport(nc); got != want {
			t.Errorf("Transport(%T) = %q, want %q", nc, got, want)
		}
	}
	c.Opened(conns[TransportTLS])
	c.Opened(conns[TransportTLS])
	c.Opened(conns[TransportWSS])
	c.Closed(conns[TransportTLS])
	got := c.Counts()
	want := []TransportCount{{TransportTCP, 0, 0}, {TransportTLS, 1, 2}, {TransportWebSocket, 0, 0}, {TransportWSS, 1, 1}}
	if len(got) != len(want) {
		t.Fatalf("Counts() = %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Counts()[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}
