package mqtt

import (
	"strconv"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/protocol"
)

// PropPayloadFormat carries the MQTT 5 Payload Format Indicator ("0" or
// "1"), forwarded unaltered to MQTT 5 subscribers [MQTT-3.3.2-4].
const PropPayloadFormat = "mqtt-payload-format"

// queuePrefix is how MQTT names a queue (a STOMP /queue/ destination).
const queuePrefix = "$queue/"

// message maps a PUBLISH onto an engine message. The body is the packet's
// payload, never copied or re-encoded. MQTT 5 properties map onto the
// engine's property names (protocol/props.go):
//
//	Content Type            content-type
//	Response Topic          reply-to, in STOMP form (/topic/a.b, or
//	                        /queue/x for $queue/x), so a STOMP consumer can
//	                        reply to it; mapped back on MQTT delivery
//	Correlation Data        correlation-id (the bytes as they are)
//	Message Expiry Interval ExpiresAt, plus expires (absolute Unix ms) for
//	                        STOMP consumers
//	Payload Format          mqtt-payload-format
//	User Property k=v       k=v, order and repeats kept
func (c *conn) message(pk *packets.Packet, now time.Time) *engine.Message {
	return pubMessage(pk, c.v5, c.origin, now)
}

// pubMessage is message for a connection of the given version and origin
// (also used for wills, whose connection may be gone).
func pubMessage(pk *packets.Packet, v5 bool, origin string, now time.Time) *engine.Message {
	m := &engine.Message{
		Topic:  pk.TopicName,
		Body:   pk.Payload,
		QoS:    pk.FixedHeader.Qos,
		Retain: pk.FixedHeader.Retain,
		Origin: origin,
	}
	if q, ok := strings.CutPrefix(m.Topic, queuePrefix); ok {
		// $queue/NAME is engine queue NAME (STOMP /queue/NAME).
		m.Topic, m.ToQueue = q, true
	}
	if !v5 {
		return m
	}
	p := &pk.Properties
	n := len(p.User)
	if n == 0 && p.ContentType == "" && p.ResponseTopic == "" && p.CorrelationData == nil &&
		p.MessageExpiryInterval == 0 && !p.PayloadFormatFlag {
		return m
	}
	props := make([]engine.Property, 0, n+5)
	if p.ContentType != "" {
		props = append(props, engine.Property{Key: protocol.PropContentType, Value: p.ContentType})
	}
	if p.ResponseTopic != "" {
		props = append(props, engine.Property{Key: protocol.PropReplyTo, Value: stompReplyTo(p.ResponseTopic)})
	}
	if p.CorrelationData != nil {
		props = append(props, engine.Property{Key: protocol.PropCorrelationID, Value: string(p.CorrelationData)})
	}
	if p.PayloadFormatFlag {
		props = append(props, engine.Property{Key: PropPayloadFormat, Value: strconv.Itoa(int(p.PayloadFormat))})
	}
	if p.MessageExpiryInterval > 0 {
		m.ExpiresAt = now.Add(time.Duration(p.MessageExpiryInterval) * time.Second).UnixNano()
		props = append(props, engine.Property{Key: protocol.PropExpires, Value: strconv.FormatInt(m.ExpiresAt/int64(time.Millisecond), 10)})
	}
	for _, u := range p.User {
		props = append(props, engine.Property{Key: u.Key, Value: u.Val})
	}
	m.Props = props
	return m
}

// stompReplyTo is the STOMP form of an MQTT response topic.
func stompReplyTo(rt string) string {
	if q, ok := strings.CutPrefix(rt, queuePrefix); ok {
		return protocol.STOMPDestination(q, true)
	}
	return protocol.STOMPDestination(rt, false)
}

// mqttResponseTopic is the MQTT form of a reply-to property: the inverse of
// stompReplyTo; anything else is passed as it is.
func mqttResponseTopic(v string) string {
	if t, ok := strings.CutPrefix(v, protocol.STOMPTopicPrefix); ok {
		return protocol.SwapSeparators(t)
	}
	if q, ok := strings.CutPrefix(v, protocol.STOMPQueuePrefix); ok {
		return queuePrefix + q
	}
	return v
}

// outProps are the MQTT 5 properties of a delivery: the inverse of
// message. The first property of a mapped name becomes the MQTT property;
// the expiry properties are carried by the Message Expiry Interval (the
// remaining lifetime, rounded up [MQTT-3.3.2-6]); everything else becomes a
// user property.
func outProps(m *engine.Message, now time.Time) packets.Properties {
	var p packets.Properties
	if m.ExpiresAt != 0 {
		left := time.Duration(m.ExpiresAt - now.UnixNano())
		p.MessageExpiryInterval = uint32(max((left+time.Second-1)/time.Second, 1))
	}
	var ct, rt, cd, pf bool
	for _, pr := range m.Props {
		switch {
		case pr.Key == protocol.PropContentType && !ct:
			p.ContentType, ct = pr.Value, true
		case pr.Key == protocol.PropReplyTo && !rt:
			p.ResponseTopic, rt = mqttResponseTopic(pr.Value), true
		case pr.Key == protocol.PropCorrelationID && !cd:
			p.CorrelationData, cd = []byte(pr.Value), true
		case pr.Key == PropPayloadFormat && !pf && (pr.Value == "0" || pr.Value == "1"):
			p.PayloadFormat, p.PayloadFormatFlag, pf = pr.Value[0]-'0', true, true
		case (pr.Key == protocol.PropExpires || pr.Key == protocol.PropExpiration) && m.ExpiresAt != 0:
		default:
			p.User = append(p.User, packets.UserProperty{Key: pr.Key, Val: pr.Value})
		}
	}
	return p
}
