package mqtt

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/protocol"
)

// Persistent sessions (docs/mqtt-design.md §4.2).
//
// A session that outlives its connection (MQTT 3.1.1 clean session 0,
// MQTT 5 Session Expiry Interval > 0) has:
//
//   - a durable engine queue "$mqtt/<client id>" bound to each of its QoS 1
//     filters, so messages published while the client is away wait on disk
//     (policy: max_length Config.SessionQueueMaxLength, overflow
//     dead-letter into "mqtt.dlq", unlimited deliveries);
//   - a record in the engine KV, namespace "mqtt.session", key the client
//     id: every filter with its options, the expiry interval and, while no
//     connection holds it, when it was left.
//
// The Server keeps every session in memory (sessions) and owns its expiry:
// a timer on Config.Clock per disconnected session, plus a sweep at
// startup and on reconnect, so a session left before a restart still
// expires on time.
const (
	sessionNS          = "mqtt.session"
	sessionQueuePrefix = "$mqtt/"
	// SessionDLQ receives what overflows a persistent session's queue.
	// Its name has no '$', so STOMP clients can read it (/queue/mqtt.dlq).
	SessionDLQ = "mqtt.dlq"
)

// sessionRecord is what the KV holds of a session (JSON).
type sessionRecord struct {
	// Expiry is the session expiry interval in seconds (0: the session
	// ends with its connection).
	Expiry uint32 `json:"expiry"`
	// Left is when the last connection ended (Unix ns), 0 while one holds
	// the session (or held it when the broker stopped).
	Left int64       `json:"left,omitempty"`
	Subs []subRecord `json:"subs,omitempty"`
}

// subRecord is one subscription of a session.
type subRecord struct {
	Filter  string `json:"f"`
	QoS     byte   `json:"q"`
	NoLocal bool   `json:"nl,omitempty"`
	RAP     bool   `json:"rap,omitempty"`
	ID      int    `json:"id,omitempty"`
}

// session is a persistent session. Guarded by Server.sessMu.
type session struct {
	id    string
	rec   sessionRecord
	owner *conn // the connection holding it, nil while none does
	timer engine.Timer
	gen   uint64 // bumped whenever the session is taken, to void old timers
	// QoS 2 state (qos2.go), shared with the connection holding the
	// session: inbound ids awaiting PUBREL (true: counted toward Receive
	// Maximum by that connection) and outbound deliveries by packet id.
	in  map[uint16]bool
	out map[uint16]*outRec
}

func sessionQueueName(clientID string) string { return sessionQueuePrefix + clientID }

// sessionPolicy is the policy of a persistent session's queue.
func (s *Server) sessionPolicy() engine.Policy {
	return engine.Policy{
		MaxDeliveries:   -1, // an MQTT session cannot refuse a message for good
		MaxLength:       s.cfg.SessionQueueMaxLength,
		MaxBytes:        s.cfg.SessionQueueMaxBytes,
		Overflow:        engine.OverflowDeadLetter,
		DeadLetterQueue: SessionDLQ,
	}
}

// expiresAt is when a disconnected session expires.
func (ss *session) expiresAt() time.Time {
	return time.Unix(0, ss.rec.Left).Add(time.Duration(ss.rec.Expiry) * time.Second)
}

// loadSessions reads the stored sessions at startup: expired ones are
// deleted, the others wait for their client with an expiry timer. A session
// whose connection was open when the broker stopped counts as left now.
func (s *Server) loadSessions() error {
	now := s.clock.Now()
	var recs []*session
	err := s.b.ScanKV(sessionNS, func(key string, v []byte) error {
		ss := &session{id: key}
		if err := json.Unmarshal(v, &ss.rec); err != nil {
			return fmt.Errorf("mqtt: session %q: %w", key, err)
		}
		recs = append(recs, ss)
		return nil
	})
	if err != nil {
		return err
	}
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	var expired []*session
	for _, ss := range recs {
		if ss.rec.Left == 0 {
			ss.rec.Left = now.UnixNano()
			if err := s.putSession(ss, false); err != nil {
				return err
			}
		}
		if ss.rec.Expiry == 0 || !now.Before(ss.expiresAt()) {
			expired = append(expired, ss)
			continue
		}
		s.sessions[ss.id] = ss
		s.armLocked(ss, now)
	}
	// After every live session is known: a group queue one of them holds
	// is kept.
	for _, ss := range expired {
		if err := s.dropSessionLocked(ss); err != nil {
			return err
		}
	}
	return nil
}

// putSession writes a session's record.
func (s *Server) putSession(ss *session, sync bool) error {
	v, err := json.Marshal(&ss.rec)
	if err != nil {
		return err
	}
	return s.b.ApplyKV([]engine.KVOp{{NS: sessionNS, Key: ss.id, Value: v}}, sync)
}

// dropSessionLocked deletes a session: its queue (with its bindings and
// backlog) and its record.
func (s *Server) dropSessionLocked(ss *session) error {
	if ss.timer != nil {
		ss.timer.Stop()
		ss.timer = nil
	}
	ss.gen++
	if s.sessions[ss.id] == ss {
		delete(s.sessions, ss.id)
	}
	if err := s.b.DeleteQueue(sessionQueueName(ss.id)); err != nil && !errors.Is(err, engine.ErrNoQueue) {
		return fmt.Errorf("mqtt: deleting session queue of %q: %w", ss.id, err)
	}
	ops := append(ss.qos2Deletes(), engine.KVOp{NS: sessionNS, Key: ss.id, Delete: true})
	ss.in, ss.out = nil, nil
	if err := s.b.ApplyKV(ops, false); err != nil {
		return fmt.Errorf("mqtt: deleting session %q: %w", ss.id, err)
	}
	for _, r := range ss.rec.Subs {
		s.releaseShareLocked(r.Filter)
	}
	return nil
}

// armLocked starts the expiry timer of a disconnected session.
func (s *Server) armLocked(ss *session, now time.Time) {
	if ss.timer != nil {
		ss.timer.Stop()
	}
	gen := ss.gen
	ss.timer = s.clock.AfterFunc(ss.expiresAt().Sub(now), func() { s.expire(ss, gen) })
}

// expire ends a session whose expiry timer fired, unless it was taken or
// re-armed since.
func (s *Server) expire(ss *session, gen uint64) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if ss.gen != gen || ss.owner != nil || s.sessions[ss.id] != ss {
		return
	}
	if err := s.dropSessionLocked(ss); err != nil && !errors.Is(err, engine.ErrClosed) {
		s.log.Error().Err(err).Str("client", ss.id).Msg("session expiry")
		return
	}
	s.log.Debug().Str("client", ss.id).Msg("session expired")
}

// takeSession gives c the session of its client id, as the CONNECT asks:
// an open connection with that client id is ended first, and waited for
// (session takeover [MQTT-3.1.4-3], for clean sessions too), an
// expired one or, with clean, any previous one is discarded. With expiry
// 0 and no previous session kept, c gets none (a clean session). It
// reports whether a previous session is present.
func (s *Server) takeSession(c *conn, clean bool, expiry uint32) (bool, error) {
	id := c.cl.ID
	s.sessMu.Lock()
	for {
		old := s.live[id]
		if old == nil {
			break
		}
		s.sessMu.Unlock()
		old.takenOver()
		<-old.gone
		s.sessMu.Lock()
	}
	defer s.sessMu.Unlock()
	now := s.clock.Now()
	ss := s.sessions[id]
	if ss != nil && (clean || !now.Before(ss.expiresAt())) {
		if err := s.dropSessionLocked(ss); err != nil {
			return false, err
		}
		ss = nil
	}
	present := ss != nil
	if ss == nil {
		if expiry == 0 {
			s.live[id] = c
			return false, nil
		}
		ss = &session{id: id}
	}
	if ss.timer != nil {
		ss.timer.Stop()
		ss.timer = nil
	}
	ss.gen++
	prev := ss.rec
	ss.rec.Expiry, ss.rec.Left = expiry, 0
	if err := s.putSession(ss, true); err != nil {
		ss.rec = prev
		if present {
			s.armLocked(ss, now)
		}
		return false, err
	}
	s.sessions[id] = ss
	ss.owner = c
	c.sess = ss
	s.live[id] = c
	// Ids received on an earlier connection do not count toward this
	// one's Receive Maximum: the client's send quota starts afresh with
	// each connection (MQTT 5 §4.9); the PUBRELs it re-sends end them.
	in := ss.qos2In()
	for id := range in {
		in[id] = false
	}
	c.q2in = in
	c.out.q2 = ss.qos2Out()
	return present, nil
}

// releaseSession is called by c's teardown: the session ends (expiry 0) or
// waits for its client, with its expiry timer running.
func (s *Server) releaseSession(c *conn) {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if s.live[c.cl.ID] == c {
		delete(s.live, c.cl.ID)
	}
	ss := c.sess
	if ss == nil || ss.owner != c {
		return
	}
	ss.owner = nil
	if ss.rec.Expiry == 0 {
		if err := s.dropSessionLocked(ss); err != nil && !errors.Is(err, engine.ErrClosed) {
			c.log.Error().Err(err).Msg("ending session")
		}
		return
	}
	now := s.clock.Now()
	ss.rec.Left = now.UnixNano()
	// Not synced: after a crash the session counts as left at restart.
	if err := s.putSession(ss, false); err != nil && !errors.Is(err, engine.ErrClosed) {
		c.log.Error().Err(err).Msg("storing session")
	}
	s.armLocked(ss, now)
}

// saveSubs stores c's subscriptions in its session record (synced: the
// SUBACK or UNSUBACK follows).
func (c *conn) saveSubs() error {
	ss := c.sess
	if ss == nil {
		return nil
	}
	c.mu.Lock()
	subs := make([]subRecord, 0, len(c.subs))
	for f, o := range c.subs {
		subs = append(subs, subRecord{Filter: f, QoS: o.qos, NoLocal: o.noLocal, RAP: o.rap, ID: o.id})
	}
	c.mu.Unlock()
	s := c.s
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if ss.owner != c {
		return errors.New("mqtt: session taken over")
	}
	prev := ss.rec.Subs
	ss.rec.Subs = subs
	if err := s.putSession(ss, true); err != nil {
		ss.rec.Subs = prev
		return err
	}
	return nil
}

// stopSessions stops every expiry timer (Close).
func (s *Server) stopSessions() {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	for _, ss := range s.sessions {
		if ss.timer != nil {
			ss.timer.Stop()
			ss.timer = nil
		}
		ss.gen++
	}
}

// setExpiry changes the expiry of c's session (MQTT 5 DISCONNECT).
func (c *conn) setExpiry(v uint32) {
	c.expiry = v
	ss := c.sess
	if ss == nil {
		return
	}
	c.s.sessMu.Lock()
	defer c.s.sessMu.Unlock()
	if ss.owner == c {
		ss.rec.Expiry = v
	}
}

// shareQueue returns the group queue of a $share/GROUP/FILTER key.
func shareQueue(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, sharePrefix)
	if !ok {
		return "", false
	}
	group, filter, ok := strings.Cut(rest, "/")
	if !ok {
		return "", false
	}
	q, err := protocol.SharedSubscriptionQueue(group, filter)
	return q, err == nil
}

// releaseShareLocked deletes the group queue of a $share/ subscription
// that no connection consumes and no persistent session holds any more
// (docs/mqtt-design.md §8.6): a group of clean sessions keeps nothing once
// its last member left. A group queue that is also a STOMP durable
// subscription (same name and filter) is kept, consumed or not: it lives
// until a STOMP client ends it.
func (s *Server) releaseShareLocked(key string) {
	q, ok := shareQueue(key)
	if !ok {
		return
	}
	for _, ss := range s.sessions {
		for _, r := range ss.rec.Subs {
			if r.Filter == key {
				return
			}
		}
	}
	info, err := s.b.QueueInfo(q)
	if err != nil || info.Consumers > 0 || s.stompDurable(q) {
		return
	}
	if err := s.b.DeleteQueue(q); err != nil && !errors.Is(err, engine.ErrNoQueue) && !errors.Is(err, engine.ErrClosed) {
		s.log.Error().Err(err).Str("queue", q).Msg("deleting shared subscription queue")
	}
}

// stompDurable reports whether queue is also a STOMP durable subscription,
// which lives until a STOMP client ends it (protocol.DurableSubscriptionNS).
// On a read error it says yes: keeping a queue is the safe mistake.
func (s *Server) stompDurable(queue string) bool {
	found := errors.New("found")
	err := s.b.ScanKV(protocol.DurableSubscriptionNS, func(key string, _ []byte) error {
		if key == queue {
			return found
		}
		return nil
	})
	return err != nil
}

// releaseShares releases the group queues of keys.
func (s *Server) releaseShares(keys []string) {
	if len(keys) == 0 {
		return
	}
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	for _, k := range keys {
		s.releaseShareLocked(k)
	}
}
