// Package protocol holds what the MQTT and STOMP adapters share: how their
// destinations and headers map onto engine addresses and message
// properties, how engine errors read on the wire, and the transports under
// both: WebSocket connections as net.Conn behind a net.Listener (ws.go)
// and TLS certificates that reload without a restart (tlsconf.go).
package protocol

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tandem-mq/tandem/engine"
)

// ErrBadDestination is returned for a destination no address maps to.
var ErrBadDestination = errors.New("protocol: bad destination")

// Kind is the kind of engine address a destination names.
type Kind int

const (
	// Topic is a multicast address (or, in a subscription, a filter).
	Topic Kind = iota + 1
	// Queue is an anycast address.
	Queue
	// TempQueue is a connection's temporary reply queue; Name is the name
	// the client gave it, which the adapter makes unique.
	TempQueue
)

// Destination is a parsed protocol destination.
type Destination struct {
	Kind Kind
	// Name is the engine topic name or filter (levels split by '/'), the
	// queue name, or the temporary queue's client-side name.
	Name string
}

// STOMP destination prefixes.
const (
	STOMPTopicPrefix     = "/topic/"
	STOMPQueuePrefix     = "/queue/"
	STOMPTempQueuePrefix = "/temp-queue/"
)

// SwapSeparators exchanges '/' and '.'. STOMP topic names separate levels
// with '.', MQTT and the engine with '/'; swapping both ways means a name
// with dots inside a level maps back without loss: engine "v1.2/temp" is
// STOMP "v1/2.temp".
func SwapSeparators(s string) string {
	if !strings.ContainsAny(s, "./") {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		switch c {
		case '/':
			b[i] = '.'
		case '.':
			b[i] = '/'
		}
	}
	return string(b)
}

// ParseSTOMP maps a STOMP destination to an engine address. filter is set
// for a subscription: then a /topic/ destination may use the wildcards '*'
// (one level) and '#' (the rest), which become the engine's '+' and '#'.
func ParseSTOMP(dest string, filter bool) (Destination, error) {
	switch {
	case strings.HasPrefix(dest, STOMPTopicPrefix):
		name := SwapSeparators(dest[len(STOMPTopicPrefix):])
		if filter {
			levels := strings.Split(name, "/")
			for i, l := range levels {
				switch {
				case l == "*":
					levels[i] = "+"
				case strings.Contains(l, "+"):
					return Destination{}, fmt.Errorf("%w: %q: '+' is not a STOMP wildcard (use '*')", ErrBadDestination, dest)
				}
			}
			name = strings.Join(levels, "/")
			if err := engine.ValidateFilter(name); err != nil {
				return Destination{}, fmt.Errorf("%w: %q: %v", ErrBadDestination, dest, err)
			}
		} else if err := engine.ValidateTopic(name); err != nil {
			return Destination{}, fmt.Errorf("%w: %q: %v", ErrBadDestination, dest, err)
		}
		return Destination{Kind: Topic, Name: name}, nil
	case strings.HasPrefix(dest, STOMPQueuePrefix):
		name := dest[len(STOMPQueuePrefix):]
		if err := engine.ValidateQueueName(name); err != nil {
			return Destination{}, fmt.Errorf("%w: %q: %v", ErrBadDestination, dest, err)
		}
		// Names starting with '$' are the broker's own (subscription,
		// session and temporary queues): a client may send to a temporary
		// queue it was given as reply-to, but not read one, nor touch the
		// others directly.
		if strings.HasPrefix(name, "$") && (filter || !IsTempQueue(name)) {
			return Destination{}, fmt.Errorf("%w: %q: queue names starting with '$' are reserved", ErrBadDestination, dest)
		}
		return Destination{Kind: Queue, Name: name}, nil
	case strings.HasPrefix(dest, STOMPTempQueuePrefix):
		name := dest[len(STOMPTempQueuePrefix):]
		if name == "" || strings.IndexByte(name, 0) >= 0 || len(name) > 255 {
			return Destination{}, fmt.Errorf("%w: %q: bad temporary queue name", ErrBadDestination, dest)
		}
		return Destination{Kind: TempQueue, Name: name}, nil
	}
	return Destination{}, fmt.Errorf("%w: %q: use /queue/NAME, /topic/NAME or /temp-queue/NAME", ErrBadDestination, dest)
}

// STOMPDestination is the STOMP destination of an engine address.
func STOMPDestination(name string, queue bool) string {
	if queue {
		return STOMPQueuePrefix + name
	}
	return STOMPTopicPrefix + SwapSeparators(name)
}

// SharedSubscriptionQueue is the engine queue behind a named durable (or
// MQTT shared) subscription to filter: the same name and filter give the
// same queue from either protocol, so their members compete. Names may
// not contain '/', which keeps the mapping unambiguous.
func SharedSubscriptionQueue(name, filter string) (string, error) {
	if name == "" || strings.ContainsAny(name, "/+#\x00") {
		return "", fmt.Errorf("%w: subscription name %q must be non-empty without '/', '+', '#'", ErrBadDestination, name)
	}
	return "$share/" + name + "/" + filter, nil
}

// DurableSubscriptionNS is the engine KV namespace where the STOMP adapter
// records its durable subscriptions (key: the engine queue, value empty).
// A shared subscription queue with such a record is kept when its last
// MQTT member leaves: a STOMP durable subscription lives until it is
// ended explicitly.
const DurableSubscriptionNS = "stomp.durable"

// TempQueueName is the engine queue behind a connection's temporary queue.
func TempQueueName(connID, name string) string {
	return tempQueuePrefix + connID + "/" + name
}

const tempQueuePrefix = "$tmp/"

// IsTempQueue reports whether name is a connection's temporary queue
// (TempQueueName).
func IsTempQueue(name string) bool { return strings.HasPrefix(name, tempQueuePrefix) }
