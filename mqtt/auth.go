package mqtt

import (
	"errors"
	"strings"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/protocol"
)

// Authentication and permissions (protocol/auth.go, protocol/perm.go),
// the same as STOMP's.
//
// A refused CONNECT gets CONNACK 0x86 (bad user name or password) or 0x87
// (not authorized); MQTT 3.1.1: 0x04 or 0x05. A refused PUBLISH gets
// PUBACK/PUBREC 0x87 (MQTT 5; QoS 0 is dropped) or closes an MQTT 3.1.1
// connection; a refused subscription gets SUBACK 0x87 (3.1.1: 0x80).

// emptyPassword stands in for a zero-length password, which mochi refuses
// (OnPacketRead); it is told apart from a real one-byte password by its
// address.
var emptyPassword = []byte{0}

// authenticate checks the CONNECT's credentials. On a refusal it has sent
// the CONNACK and returns the code as the error.
func (s *Server) authenticate(cl *mochi.Client, pk *packets.Packet) (*protocol.Identity, error) {
	if s.cfg.Auth == nil {
		return nil, nil
	}
	pass := pk.Connect.Password
	if len(pass) == 1 && &pass[0] == &emptyPassword[0] {
		pass = nil
	}
	ident, err := s.cfg.Auth.Authenticate(protocol.Credentials{
		Remote:   cl.Net.Conn.RemoteAddr(),
		User:     string(pk.Connect.Username),
		Password: pass,
		CertUser: protocol.CertUser(cl.Net.Conn),
		Client:   cl.ID,
	})
	if err == nil {
		return ident, nil
	}
	s.log.Info().Str("client", cl.ID).Str("user", string(pk.Connect.Username)).Str("remote", cl.Net.Remote).Err(err).Msg("authentication failed")
	notAuth := errors.Is(err, protocol.ErrNotAuthorized)
	var code packets.Code
	switch v5 := cl.Properties.ProtocolVersion == 5; {
	case v5 && notAuth:
		code = packets.ErrNotAuthorized
	case v5:
		code = packets.ErrBadUsernameOrPassword
	case notAuth:
		code = packets.Err3NotAuthorized
	default:
		code = packets.ErrMalformedUsernameOrPassword // 3.1.1's 0x04: bad user name or password
	}
	_ = s.ms.SendConnack(cl, code, false, nil)
	return nil, code
}

// mayPublish reports whether the connection may publish to topic (an MQTT
// topic name; $queue/NAME sends to queue NAME).
func (c *conn) mayPublish(topic string) bool {
	if c.ident == nil {
		return true
	}
	if q, ok := strings.CutPrefix(topic, queuePrefix); ok {
		return c.ident.CanSendQueue(q)
	}
	return c.ident.CanPublishTopic(topic)
}

// maySubscribe reports whether the connection may subscribe: kind and
// name as subscribeOne parsed them (a filter, or the queue of $queue/).
func (c *conn) maySubscribe(kind subKind, name string) bool {
	switch {
	case c.ident == nil:
		return true
	case kind == kindQueue:
		return c.ident.CanConsumeQueue(name)
	}
	return c.ident.CanSubscribeFilter(name)
}

// errNotAuthorized refuses a publish the identity does not allow.
var errNotAuthorized = protocol.ErrNotAuthorized

// admit takes the connection's Limiter slot. On a refusal it has sent the
// CONNACK and returns the code as the error.
func (s *Server) admit(cl *mochi.Client) (func(), error) {
	release, err := s.cfg.Limiter.Admit(cl.Net.Conn.RemoteAddr())
	if err == nil {
		return release, nil
	}
	s.log.Info().Str("client", cl.ID).Str("remote", cl.Net.Remote).Err(err).Msg("connection refused")
	code := packets.ErrQuotaExceeded
	switch {
	case cl.Properties.ProtocolVersion != 5:
		code = packets.Err3ServerUnavailable
	case errors.Is(err, protocol.ErrConnectionRateExceed):
		code = packets.ErrConnectionRateExceeded
	}
	_ = s.ms.SendConnack(cl, code, false, nil)
	return nil, code
}
