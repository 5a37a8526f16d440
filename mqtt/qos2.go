package mqtt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/engine"
)

// QoS 2 state (docs/mqtt-design.md §6.2).
//
// Inbound, a connection keeps the packet ids it answered with PUBREC and
// has not seen PUBREL for: a PUBLISH with one of them is a re-send, acked
// again and not published twice [MQTT-4.3.3-10]. A persistent session's
// ids are also in the KV namespace "mqtt.qos2in" (key "<client id>/<id>"),
// written in the same synced batch as the message before the PUBREC and
// deleted, synced, before the PUBCOMP: after a crash the client's re-sent
// PUBLISH is still recognised, and after a PUBCOMP the id is free again.
//
// Outbound, a persistent session records each QoS 2 delivery in
// "mqtt.qos2out" (same key form; value: state, entry sequence, queue),
// synced before the PUBLISH is written. A redelivery of that queue entry
// (after a reconnect or a restart) reuses the packet id, so the client's
// own duplicate detection works. PUBREC acks the entry in the engine and
// marks the record released in one transaction, then PUBREL is sent; a
// released record is sent PUBREL again on reconnect; PUBCOMP deletes it.
// Clean sessions keep the same state in memory only: it ends with them.
const (
	qos2InNS  = "mqtt.qos2in"
	qos2OutNS = "mqtt.qos2out"
)

// outRec is an outbound QoS 2 delivery of a persistent session.
type outRec struct {
	queue    string
	seq      uint64 // the queue entry's sequence (its delivery tag)
	released bool   // PUBREC seen, engine entry acked: PUBREL sent
}

// entryKey identifies a queue entry across restarts.
type entryKey struct {
	queue string
	seq   uint64
}

func qos2Key(clientID string, id uint16) string {
	return clientID + "/" + strconv.Itoa(int(id))
}

// parseQoS2Key splits a "<client id>/<packet id>" key.
func parseQoS2Key(key string) (string, uint16, bool) {
	i := strings.LastIndexByte(key, '/')
	if i < 0 {
		return "", 0, false
	}
	n, err := strconv.ParseUint(key[i+1:], 10, 16)
	if err != nil || n == 0 {
		return "", 0, false
	}
	return key[:i], uint16(n), true
}

const (
	recSent     = 1
	recReleased = 2
)

func encodeOutRec(r outRec) []byte {
	state := byte(recSent)
	if r.released {
		state = recReleased
	}
	b := binary.AppendUvarint([]byte{state}, r.seq)
	return append(b, r.queue...)
}

func decodeOutRec(v []byte) (outRec, error) {
	if len(v) < 2 || (v[0] != recSent && v[0] != recReleased) {
		return outRec{}, errors.New("bad state")
	}
	seq, n := binary.Uvarint(v[1:])
	if n <= 0 {
		return outRec{}, errors.New("bad sequence")
	}
	return outRec{released: v[0] == recReleased, seq: seq, queue: string(v[1+n:])}, nil
}

// loadQoS2 reads the QoS 2 records at startup into their sessions (after
// loadSessions). Records of sessions that no longer exist are deleted.
func (s *Server) loadQoS2() error {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	var stale []engine.KVOp
	err := s.b.ScanKV(qos2InNS, func(key string, _ []byte) error {
		client, id, ok := parseQoS2Key(key)
		ss := s.sessions[client]
		if !ok || ss == nil {
			stale = append(stale, engine.KVOp{NS: qos2InNS, Key: key, Delete: true})
			return nil
		}
		ss.qos2In()[id] = false
		return nil
	})
	if err != nil {
		return err
	}
	err = s.b.ScanKV(qos2OutNS, func(key string, v []byte) error {
		client, id, ok := parseQoS2Key(key)
		ss := s.sessions[client]
		if !ok || ss == nil {
			stale = append(stale, engine.KVOp{NS: qos2OutNS, Key: key, Delete: true})
			return nil
		}
		r, err := decodeOutRec(v)
		if err != nil {
			return fmt.Errorf("mqtt: QoS 2 record %q: %w", key, err)
		}
		ss.qos2Out()[id] = &r
		return nil
	})
	if err != nil {
		return err
	}
	return s.b.ApplyKV(stale, false)
}

func (ss *session) qos2In() map[uint16]bool {
	if ss.in == nil {
		ss.in = make(map[uint16]bool)
	}
	return ss.in
}

func (ss *session) qos2Out() map[uint16]*outRec {
	if ss.out == nil {
		ss.out = make(map[uint16]*outRec)
	}
	return ss.out
}

// qos2Deletes returns the KV deletions of a session's QoS 2 records.
func (ss *session) qos2Deletes() []engine.KVOp {
	var ops []engine.KVOp
	for id := range ss.in {
		ops = append(ops, engine.KVOp{NS: qos2InNS, Key: qos2Key(ss.id, id), Delete: true})
	}
	for id := range ss.out {
		ops = append(ops, engine.KVOp{NS: qos2OutNS, Key: qos2Key(ss.id, id), Delete: true})
	}
	return ops
}

// received reports whether id is an inbound QoS 2 publish awaiting PUBREL,
// and otherwise records it as one.
func (c *conn) received(id uint16) (dup bool) {
	c.q2mu.Lock()
	defer c.q2mu.Unlock()
	if _, dup = c.q2in[id]; !dup {
		c.q2in[id] = true // counts toward Receive Maximum until PUBCOMP
	}
	return dup
}

// forgetReceived removes an inbound QoS 2 id; counted reports whether it
// counted toward Receive Maximum.
func (c *conn) forgetReceived(id uint16) (known, counted bool) {
	c.q2mu.Lock()
	defer c.q2mu.Unlock()
	counted, known = c.q2in[id]
	delete(c.q2in, id)
	return known, counted
}

// hasReceived reports whether id awaits PUBREL.
func (c *conn) hasReceived(id uint16) bool {
	c.q2mu.Lock()
	defer c.q2mu.Unlock()
	_, ok := c.q2in[id]
	return ok
}

// clientPubrec handles a PUBREC for a QoS 2 delivery: the queue entry is
// acked, and the record marked released, in one transaction; then PUBREL.
// An MQTT 5 PUBREC with a reason code of 0x80 or more refuses the message
// (NACK) and ends the flow.
func (c *conn) clientPubrec(pk packets.Packet) {
	id := pk.PacketID
	fl, state := c.out.pubrec(id)
	switch state {
	case ackUnknown:
		code := byte(0)
		if c.v5 {
			code = packets.ErrPacketIdentifierNotFound.Code // [MQTT-4.3.3-13]
		}
		c.pubrel(id, code)
		return
	case ackAgain:
		c.pubrel(id, 0) // the client did not get the first PUBREL
		return
	}
	c.mu.Lock()
	cons := c.cons[fl.queue]
	c.mu.Unlock()
	if c.v5 && pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
		if c.out.drop(id) {
			c.deleteOutRec(id)
		}
		if cons != nil && fl.tag != 0 {
			if err := cons.Nack(fl.tag); err != nil && !errors.Is(err, engine.ErrClosed) {
				c.log.Debug().Err(err).Uint16("packet_id", id).Msg("pubrec")
			}
		}
		return
	}
	tx := c.s.b.Begin()
	if cons != nil && fl.tag != 0 {
		_ = tx.Ack(cons, fl.tag)
	}
	c.out.idMu.Lock()
	r := c.out.q2[id]
	if r != nil {
		r.released = true
		tx.PutKV(qos2OutNS, qos2Key(c.cl.ID, id), encodeOutRec(*r))
	}
	c.out.idMu.Unlock()
	if err := tx.Commit(); err != nil {
		if errors.Is(err, engine.ErrConsumerClosed) || errors.Is(err, engine.ErrUnknownTag) {
			// Unsubscribed, or the entry is gone: nothing to ack. The
			// client has the message; complete its flow.
			c.log.Debug().Err(err).Uint16("packet_id", id).Msg("pubrec")
			if r != nil {
				c.putOutRec(id, *r)
			}
		} else {
			c.log.Error().Err(err).Uint16("packet_id", id).Msg("pubrec")
			c.cl.Stop(err)
			return
		}
	}
	c.pubrel(id, 0)
}

// clientPubcomp ends a QoS 2 delivery: its id is free again and its record
// deleted (unsynced: a record left by a crash only makes the next
// connection send one PUBREL more, which the client answers).
func (c *conn) clientPubcomp(pk packets.Packet) {
	if _, ok := c.out.pubcomp(pk.PacketID); !ok {
		return
	}
	if c.out.drop(pk.PacketID) {
		c.deleteOutRec(pk.PacketID)
	}
}

func (c *conn) putOutRec(id uint16, r outRec) {
	err := c.s.b.ApplyKV([]engine.KVOp{{NS: qos2OutNS, Key: qos2Key(c.cl.ID, id), Value: encodeOutRec(r)}}, false)
	if err != nil && !errors.Is(err, engine.ErrClosed) {
		c.log.Warn().Err(err).Uint16("packet_id", id).Msg("storing QoS 2 record")
	}
}

func (c *conn) deleteOutRec(id uint16) {
	err := c.s.b.ApplyKV([]engine.KVOp{{NS: qos2OutNS, Key: qos2Key(c.cl.ID, id), Delete: true}}, false)
	if err != nil && !errors.Is(err, engine.ErrClosed) {
		c.log.Warn().Err(err).Uint16("packet_id", id).Msg("deleting QoS 2 record")
	}
}

// pubrel queues a PUBREL.
func (c *conn) pubrel(id uint16, code byte) {
	c.out.control(encode(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Pubrel, Qos: 1},
		PacketID:        id,
		ReasonCode:      code,
		ProtocolVersion: c.cl.Properties.ProtocolVersion,
	}))
}
