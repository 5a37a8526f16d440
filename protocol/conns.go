package protocol

import (
	"crypto/tls"
	"errors"
	"net"
	"sync/atomic"
)

// What operators see of the adapters' connections: the admin API lists
// them and the metrics endpoint counts them by transport.

// ErrNoConnection is returned when asked to close a connection that is not
// open.
var ErrNoConnection = errors.New("protocol: no such connection")

// Transports a connection can come over, as metrics and the admin API name
// them.
const (
	TransportTCP       = "tcp"
	TransportTLS       = "tls"
	TransportWebSocket = "websocket"
	TransportWSS       = "wss"
)

// Transports lists every transport, in a fixed order.
var Transports = [...]string{TransportTCP, TransportTLS, TransportWebSocket, TransportWSS}

// Transport names the transport nc came over: a connection from a TLS
// listener is a *tls.Conn, one from a WSListener a WebSocket connection
// over the hijacked TCP or TLS connection; anything else counts as TCP.
func Transport(nc net.Conn) string {
	switch c := nc.(type) {
	case *tls.Conn:
		return TransportTLS
	case *wsConn:
		if _, ok := c.raw.(*tls.Conn); ok {
			return TransportWSS
		}
		return TransportWebSocket
	}
	return TransportTCP
}

func transportIndex(t string) int {
	for i, x := range Transports {
		if x == t {
			return i
		}
	}
	return 0
}

// ConnCounter counts a server's connections by transport: open now, and
// accepted since the server started. It is safe for concurrent use; the
// zero value is ready.
type ConnCounter struct {
	open, opened [len(Transports)]atomic.Int64
}

// Opened counts an accepted connection of nc's transport.
func (c *ConnCounter) Opened(nc net.Conn) {
	i := transportIndex(Transport(nc))
	c.open[i].Add(1)
	c.opened[i].Add(1)
}

// Closed counts the end of a connection counted by Opened.
func (c *ConnCounter) Closed(nc net.Conn) {
	c.open[transportIndex(Transport(nc))].Add(-1)
}

// TransportCount is how many connections of one transport are open, and
// how many were accepted in all.
type TransportCount struct {
	Transport    string
	Open, Opened int64
}

// Counts returns the figures of every transport, in Transports order.
func (c *ConnCounter) Counts() []TransportCount {
	out := make([]TransportCount, len(Transports))
	for i, t := range Transports {
		out[i] = TransportCount{Transport: t, Open: c.open[i].Load(), Opened: c.opened[i].Load()}
	}
	return out
}

// ConnInfo describes one open connection for operators.
type ConnInfo struct {
	// Protocol is "mqtt" or "stomp".
	Protocol string `json:"protocol"`
	// ID names the connection for CloseConnection: the client id for
	// MQTT, the session id (the CONNECTED frame's session header) for
	// STOMP.
	ID        string `json:"id"`
	Transport string `json:"transport"`
	Remote    string `json:"remote"`
	Local     string `json:"local"`
	// User is the user the connection authenticated as ("" for an
	// anonymous one); without authentication, the login it gave.
	User string `json:"user,omitempty"`
	// ClientID is the MQTT client id, or the STOMP client-id header.
	ClientID string `json:"client_id,omitempty"`
	// Version is the protocol version: "3.1.1", "5.0", "1.2", ...
	Version string `json:"version"`
	// Persistent is set for an MQTT connection holding a persistent
	// session.
	Persistent bool `json:"persistent,omitempty"`
	// Subscriptions are the connection's subscriptions: MQTT filters as
	// the client wrote them, STOMP destinations.
	Subscriptions []string `json:"subscriptions"`
}

// CertUser is the user a verified TLS client certificate names (its
// subject's common name) on a TLS or wss:// connection; "" for none (no
// TLS, no certificate, or one not verified against tls.client_ca).
func CertUser(nc net.Conn) string {
	var tc *tls.Conn
	switch c := nc.(type) {
	case *tls.Conn:
		tc = c
	case *wsConn:
		tc, _ = c.raw.(*tls.Conn)
	}
	if tc == nil {
		return ""
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return ""
	}
	return st.PeerCertificates[0].Subject.CommonName
}
