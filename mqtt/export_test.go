package mqtt

import mochi "github.com/mochi-mqtt/server/v2"

// ClosingForTest reports whether the connection of clientID has begun to
// close for a protocol error (closeInOrder), so a test can hold a commit
// until the server has decided.
func (s *Server) ClosingForTest(clientID string) bool {
	closing := false
	s.conns.Range(func(k, v any) bool {
		if k.(*mochi.Client).ID == clientID && v.(*conn).closing.Load() {
			closing = true
		}
		return true
	})
	return closing
}
