package engine

import "time"

// Property is one message property: a STOMP header or an MQTT 5 user
// property. Order is kept; a key may repeat.
type Property struct {
	Key   string
	Value string
}

// Message is what a producer publishes. The body is never re-encoded: the
// engine stores and delivers the bytes it was given.
type Message struct {
	// ID is assigned by the engine when the message is published. It is
	// unique for the life of the database.
	ID uint64
	// Topic is the engine address the message was published to: a topic
	// name for a topic publish, the queue name for a queue publish.
	Topic string
	// ToQueue is true when Topic names a queue (anycast) rather than a
	// topic (multicast).
	ToQueue bool
	// Props are the message's properties in the order the producer gave
	// them.
	Props []Property
	// Body is the payload, byte for byte.
	Body []byte
	// QoS is the MQTT quality of service the message was published with
	// (0, 1 or 2). STOMP publishes use 1 for persistent messages and 0
	// otherwise.
	QoS uint8
	// Retain is the MQTT retain flag.
	Retain bool
	// PublishedAt is the time the engine accepted the message, in Unix
	// nanoseconds.
	PublishedAt int64
	// ExpiresAt is the absolute expiry time in Unix nanoseconds, or 0 for
	// none. Expired messages are never delivered.
	ExpiresAt int64
	// NotBefore is the earliest delivery time in Unix nanoseconds, or 0 to
	// deliver at once (delayed delivery).
	NotBefore int64
	// Origin identifies the connection or client that published the
	// message ("" if unknown). Adapters set it; the engine stores it with
	// the message and never routes on it. MQTT uses it for No Local
	// [MQTT-3.8.3-3].
	Origin string
}

// Prop returns the value of the first property named key.
func (m *Message) Prop(key string) (string, bool) {
	for _, p := range m.Props {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}

// Size is the number of bytes the message counts for against max_bytes:
// its body plus its property keys and values (not its topic or Origin).
func (m *Message) Size() int64 {
	n := int64(len(m.Body))
	for _, p := range m.Props {
		n += int64(len(p.Key) + len(p.Value))
	}
	return n
}

// Clone returns a copy whose Props slice can be changed without touching m.
// The body is shared: it is never written to.
func (m *Message) Clone() *Message {
	c := *m
	c.Props = append([]Property(nil), m.Props...)
	return &c
}

// Expired reports whether the message has expired at now.
func (m *Message) Expired(now time.Time) bool {
	return m.ExpiresAt != 0 && now.UnixNano() >= m.ExpiresAt
}

// Headers the engine sets on dead letters.
const (
	HeaderDeathReason         = "x-death-reason"
	HeaderOriginalDestination = "x-original-destination"
	HeaderDeathTime           = "x-death-time"
)

// Reasons written in HeaderDeathReason.
const (
	DeathMaxDeliveries = "max-deliveries"
	DeathExpired       = "expired"
	DeathOverflow      = "overflow"
	DeathRejected      = "rejected"
)
