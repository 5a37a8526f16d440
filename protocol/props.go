package protocol

import (
	"strconv"
	"time"

	"github.com/tandem-mq/tandem/engine"
)

// Message properties shared by both protocols. The engine keeps properties
// under their STOMP header names; the MQTT adapter maps MQTT 5 properties
// onto the same keys (content type, response topic, correlation data) and
// user properties one to one.
const (
	PropContentType   = "content-type"
	PropReplyTo       = "reply-to"
	PropCorrelationID = "correlation-id"
	PropExpires       = "expires"    // ActiveMQ: absolute, Unix milliseconds
	PropExpiration    = "expiration" // RabbitMQ: relative, milliseconds
	PropPersistent    = "persistent"
	PropDelayAMQ      = "AMQ_SCHEDULED_DELAY" // ActiveMQ: delay in milliseconds
	PropDelayRabbit   = "x-delay"             // RabbitMQ delayed-message plugin: milliseconds
)

// MaxDelay bounds delayed delivery, so a typo cannot park a message for
// centuries.
const MaxDelay = 365 * 24 * time.Hour

// ApplyTimeProps sets m.ExpiresAt and m.NotBefore from the expiry and delay
// properties, relative to now. A property that does not parse is ignored,
// as RabbitMQ and ActiveMQ do; the earliest expiry wins.
func ApplyTimeProps(m *engine.Message, now time.Time) {
	for _, p := range m.Props {
		switch p.Key {
		case PropExpires:
			if ms, err := strconv.ParseInt(p.Value, 10, 64); err == nil && ms > 0 {
				setExpiry(m, time.UnixMilli(ms).UnixNano())
			}
		case PropExpiration:
			if ms, err := strconv.ParseInt(p.Value, 10, 64); err == nil && ms >= 0 {
				setExpiry(m, now.Add(time.Duration(ms)*time.Millisecond).UnixNano())
			}
		case PropDelayAMQ, PropDelayRabbit:
			if ms, err := strconv.ParseInt(p.Value, 10, 64); err == nil && ms > 0 {
				d := min(time.Duration(ms)*time.Millisecond, MaxDelay)
				m.NotBefore = now.Add(d).UnixNano()
			}
		}
	}
}

func setExpiry(m *engine.Message, at int64) {
	if m.ExpiresAt == 0 || at < m.ExpiresAt {
		m.ExpiresAt = at
	}
}
