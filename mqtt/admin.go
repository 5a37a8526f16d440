package mqtt

import (
	"net"
	"sort"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/protocol"
)

// What operators see of the server (the admin API and the metrics
// endpoint): connections, persistent sessions, connection counts.

// Connections describes the open connections whose CONNECT was accepted,
// ordered by client id.
func (s *Server) Connections() []protocol.ConnInfo {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.netConns))
	for _, c := range s.netConns {
		if c != nil {
			conns = append(conns, c)
		}
	}
	s.mu.Unlock()
	out := make([]protocol.ConnInfo, 0, len(conns))
	for _, c := range conns {
		info := protocol.ConnInfo{
			Protocol:  "mqtt",
			ID:        c.cl.ID,
			Transport: protocol.Transport(c.nc),
			Remote:    addrString(c.nc.RemoteAddr()),
			Local:     addrString(c.nc.LocalAddr()),
			User:      string(c.cl.Properties.Username), // without Config.Auth
			ClientID:  c.cl.ID,
			Version:   protocolVersion(c.cl.Properties.ProtocolVersion),
		}
		if c.ident != nil {
			info.User = c.ident.User // as authenticated ("" for anonymous)
		}
		c.mu.Lock()
		info.Subscriptions = make([]string, 0, len(c.subs))
		for f := range c.subs {
			info.Subscriptions = append(info.Subscriptions, f)
		}
		c.mu.Unlock()
		sort.Strings(info.Subscriptions)
		s.sessMu.Lock()
		ss := s.sessions[c.cl.ID]
		info.Persistent = ss != nil && ss.owner == c
		s.sessMu.Unlock()
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func protocolVersion(v byte) string {
	switch v {
	case 3:
		return "3.1"
	case 4:
		return "3.1.1"
	case 5:
		return "5.0"
	}
	return ""
}

// CloseConnection closes the connection of the client whose id is
// clientID, as a server-side disconnect: an MQTT 5 client gets DISCONNECT
// 0x98 (administrative action), an MQTT 3.1.1 client a closed socket; its
// will, if any, is published and a persistent session stays for its
// return. It returns protocol.ErrNoConnection if no such client is
// connected.
func (s *Server) CloseConnection(clientID string) error {
	s.sessMu.Lock()
	c := s.live[clientID]
	s.sessMu.Unlock()
	if c == nil {
		return protocol.ErrNoConnection
	}
	c.log.Info().Msg("closed by an administrator")
	if c.v5 {
		// A client that does not read must not hold the caller up.
		_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	}
	c.disconnect(packets.ErrAdministrativeAction)
	return nil
}

// ConnCounts returns the number of connections by transport: open, and
// accepted since the server started.
func (s *Server) ConnCounts() []protocol.TransportCount { return s.counts.Counts() }

// SessionInfo describes a persistent session.
type SessionInfo struct {
	ClientID string
	// Connected is set while a connection holds the session.
	Connected bool
	// Expiry is the session expiry interval; ExpiresAt is when the session
	// ends if its client does not come back (zero while connected).
	Expiry    time.Duration
	ExpiresAt time.Time
	// Queue is the durable queue of the session's QoS 1 and 2
	// subscriptions.
	Queue   string
	Filters []SessionFilter
}

// SessionFilter is one subscription of a session.
type SessionFilter struct {
	Filter string
	QoS    byte
}

// Sessions describes the persistent sessions, connected or not, ordered by
// client id.
func (s *Server) Sessions() []SessionInfo {
	s.sessMu.Lock()
	out := make([]SessionInfo, 0, len(s.sessions))
	for _, ss := range s.sessions {
		info := SessionInfo{
			ClientID:  ss.id,
			Connected: ss.owner != nil,
			Expiry:    time.Duration(ss.rec.Expiry) * time.Second,
			Queue:     sessionQueueName(ss.id),
		}
		if !info.Connected {
			info.ExpiresAt = ss.expiresAt()
		}
		for _, r := range ss.rec.Subs {
			info.Filters = append(info.Filters, SessionFilter{Filter: r.Filter, QoS: r.QoS})
		}
		sort.Slice(info.Filters, func(i, j int) bool { return info.Filters[i].Filter < info.Filters[j].Filter })
		out = append(out, info)
	}
	s.sessMu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ClientID < out[j].ClientID })
	return out
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
