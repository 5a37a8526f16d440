package stomp

import (
	"net"
	"sort"
	"sync"

	"github.com/tandem-mq/tandem/protocol"
)

// What operators see of the server's connections (the admin API and the
// metrics endpoint). A connection's state belongs to its processor
// goroutine; connInfo is the copy of what operators need, kept under its
// own lock.

// connInfo is what Connections reports of a connection. Lock order:
// Server.mu -> connInfo.mu.
type connInfo struct {
	mu        sync.Mutex
	connected bool
	user      string
	clientID  string
	version   Version
	subs      map[string]string // subscription id -> destination
}

// setConnected records a completed CONNECT.
func (ci *connInfo) setConnected(user, clientID string, v Version) {
	ci.mu.Lock()
	ci.connected, ci.user, ci.clientID, ci.version = true, user, clientID, v
	ci.mu.Unlock()
}

func (ci *connInfo) addSub(id, dest string) {
	ci.mu.Lock()
	if ci.subs == nil {
		ci.subs = make(map[string]string)
	}
	ci.subs[id] = dest
	ci.mu.Unlock()
}

func (ci *connInfo) removeSub(id string) {
	ci.mu.Lock()
	delete(ci.subs, id)
	ci.mu.Unlock()
}

// Connections describes the open connections that have completed CONNECT,
// ordered by id.
func (s *Server) Connections() []protocol.ConnInfo {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	out := make([]protocol.ConnInfo, 0, len(conns))
	for _, c := range conns {
		ci := &c.info
		ci.mu.Lock()
		if !ci.connected {
			ci.mu.Unlock()
			continue
		}
		info := protocol.ConnInfo{
			Protocol:      "stomp",
			ID:            c.id,
			Transport:     protocol.Transport(c.nc),
			Remote:        addrString(c.nc.RemoteAddr()),
			Local:         addrString(c.nc.LocalAddr()),
			User:          ci.user,
			ClientID:      ci.clientID,
			Version:       ci.version.String(),
			Subscriptions: make([]string, 0, len(ci.subs)),
		}
		for _, d := range ci.subs {
			info.Subscriptions = append(info.Subscriptions, d)
		}
		ci.mu.Unlock()
		sort.Strings(info.Subscriptions)
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool {
		if len(out[i].ID) != len(out[j].ID) {
			return len(out[i].ID) < len(out[j].ID) // numeric order
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// CloseConnection closes the connection whose session id is id: it gets an
// ERROR frame saying an administrator closed it, and its unacked messages
// return to their queues. It returns protocol.ErrNoConnection if no such
// connection is open.
func (s *Server) CloseConnection(id string) error {
	s.mu.Lock()
	var found *conn
	for c := range s.conns {
		if c.id == id {
			found = c
			break
		}
	}
	s.mu.Unlock()
	if found == nil {
		return protocol.ErrNoConnection
	}
	found.log.Info().Msg("closed by an administrator")
	// The writer closes the connection once the ERROR is written (or
	// its write times out); a writer that has stopped already has closed
	// it.
	found.out.error(&protoError{msg: "connection closed by an administrator"}, found.version())
	return nil
}

// ConnCounts returns the number of connections by transport: open, and
// accepted since the server started.
func (s *Server) ConnCounts() []protocol.TransportCount { return s.counts.Counts() }

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
