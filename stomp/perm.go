package stomp

import (
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/protocol"
)

// Permissions (protocol/perm.go): a SEND or SUBSCRIBE the connection's
// identity does not allow gets an ERROR frame, and nothing is published,
// stored or subscribed. A connection's own temporary queues, and replies
// to another's (a reply-to it was given), need no permission.

// mayPublish reports whether the connection may publish m.
func (c *conn) mayPublish(m *engine.Message) bool {
	switch {
	case c.ident == nil:
		return true
	case m.ToQueue && protocol.IsTempQueue(m.Topic):
		return true
	case m.ToQueue:
		return c.ident.CanSendQueue(m.Topic)
	}
	return c.ident.CanPublishTopic(m.Topic)
}

// maySubscribe reports whether the connection may subscribe to d (a topic
// filter or a queue).
func (c *conn) maySubscribe(d protocol.Destination) bool {
	switch {
	case c.ident == nil, d.Kind == protocol.TempQueue:
		return true
	case d.Kind == protocol.Queue:
		return c.ident.CanConsumeQueue(d.Name)
	}
	return c.ident.CanSubscribeFilter(d.Name)
}
