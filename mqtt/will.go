package mqtt

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/tandem-mq/tandem/engine"
)

// Wills (docs/mqtt-design.md §5.2).
//
// A CONNECT's will is stored in the engine KV, namespace "mqtt.will", key
// the client id, synced before the CONNACK, and kept by the connection
// (conn.will). mochi never publishes a will (OnWill returns none): Tandem
// publishes it through the engine, like any publish (mapped properties,
// retained store), when the connection ends without a normal DISCONNECT
// (socket closed, keepalive timeout, protocol error, takeover, MQTT 5
// DISCONNECT with a reason other than 0x00, such as 0x04). A normal
// DISCONNECT deletes it.
//
// An MQTT 5 Will Delay Interval, capped by the session expiry interval
// (a session that ends with its connection publishes at once), makes the
// will wait: its due time is stored and a timer on Config.Clock publishes
// it, unless a connection with the same client id resumes the session
// first [MQTT-3.1.3-9]. A connection that discards the session (clean
// start) publishes it at once, since the session ended.
//
// A will stored for a connection that was open when the broker stopped
// (killed, or Close: a shutdown publishes no will) is published at the
// next start, after its delay counted from the start; one that was
// waiting for its delay keeps its due time.
const willNS = "mqtt.will"

// willRecord is what the KV holds of a will (JSON).
type willRecord struct {
	Topic   string             `json:"t"`
	Payload []byte             `json:"p,omitempty"`
	QoS     byte               `json:"q,omitempty"`
	Retain  bool               `json:"r,omitempty"`
	V5      bool               `json:"v5,omitempty"`
	Origin  string             `json:"o,omitempty"`
	Props   packets.Properties `json:"props"`
	// Delay is the Will Delay Interval and Expiry the granted session
	// expiry interval (seconds) of the connection.
	Delay  uint32 `json:"delay,omitempty"`
	Expiry uint32 `json:"expiry,omitempty"`
	// Due is when a waiting will is published (Unix ns), 0 while its
	// connection is open.
	Due int64 `json:"due,omitempty"`
}

// pendingWill is a will waiting for its delay. Guarded by Server.willMu.
type pendingWill struct {
	id    string
	rec   willRecord
	timer engine.Timer
}

// loadWills publishes or arms, at startup, the wills left in the KV.
func (s *Server) loadWills() error {
	now := s.clock.Now()
	type stored struct {
		id  string
		rec willRecord
	}
	var recs []stored
	err := s.b.ScanKV(willNS, func(key string, v []byte) error {
		var r willRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("mqtt: will of %q: %w", key, err)
		}
		recs = append(recs, stored{key, r})
		return nil
	})
	if err != nil {
		return err
	}
	s.willMu.Lock()
	defer s.willMu.Unlock()
	for _, st := range recs {
		r := st.rec
		if r.Due == 0 {
			// Its connection was open when the broker stopped: it ended
			// without DISCONNECT, now.
			r.Due = now.Add(willDelay(r.Delay, r.Expiry)).UnixNano()
		}
		due := time.Unix(0, r.Due)
		if !now.Before(due) {
			if err := s.publishWillLocked(st.id, &r); err != nil {
				return err
			}
			continue
		}
		pw := &pendingWill{id: st.id, rec: r}
		if err := s.putWill(st.id, &pw.rec, false); err != nil {
			return err
		}
		s.armWillLocked(pw, due.Sub(now))
	}
	return nil
}

// willDelay is how long a will waits once its connection ended: its delay
// capped by the session expiry.
func willDelay(delay, expiry uint32) time.Duration {
	return time.Duration(min(delay, expiry)) * time.Second
}

func (s *Server) putWill(id string, r *willRecord, sync bool) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if len(v) > engine.MaxKVValueLength {
		return fmt.Errorf("mqtt: will of %q too big to store (%d bytes)", id, len(v))
	}
	return s.b.ApplyKV([]engine.KVOp{{NS: willNS, Key: id, Value: v}}, sync)
}

// validWillTopic reports whether a will may be published to topic.
func validWillTopic(topic string) bool {
	if isSysTopic(topic) {
		return false
	}
	if q, ok := strings.CutPrefix(topic, queuePrefix); ok {
		return engine.ValidateQueueName(q) == nil && !strings.ContainsAny(q, "+#")
	}
	return engine.ValidateTopic(topic) == nil
}

// emptyWillPayload stands in for a zero-length will payload, which mochi
// refuses (OnPacketRead); it is told apart from a real one-byte payload by
// its address.
var emptyWillPayload = []byte{0}

func isEmptyWillPayload(p []byte) bool {
	return len(p) == 1 && &p[0] == &emptyWillPayload[0]
}

// connectWill runs in OnConnect once c has its session: a will waiting for
// the client id is dropped if the session resumes (present) and published
// otherwise (the session it belonged to ended); then the CONNECT's will,
// if any, is stored (synced) and kept by c.
func (s *Server) connectWill(c *conn, pk *packets.Packet, present bool) error {
	id := c.cl.ID
	s.willMu.Lock()
	defer s.willMu.Unlock()
	var ops []engine.KVOp
	if pw := s.wills[id]; pw != nil {
		pw.timer.Stop()
		delete(s.wills, id)
		if present {
			ops = append(ops, engine.KVOp{NS: willNS, Key: id, Delete: true})
		} else if err := s.publishWillLocked(id, &pw.rec); err != nil && !errors.Is(err, engine.ErrClosed) {
			c.log.Error().Err(err).Msg("publishing will")
		}
	}
	if !pk.Connect.WillFlag {
		if len(ops) > 0 {
			return s.b.ApplyKV(ops, false)
		}
		return nil
	}
	payload := pk.Connect.WillPayload
	if isEmptyWillPayload(payload) {
		payload = nil
	}
	r := &willRecord{
		Topic:   pk.Connect.WillTopic,
		Payload: append([]byte(nil), payload...),
		QoS:     pk.Connect.WillQos,
		Retain:  pk.Connect.WillRetain,
		V5:      c.v5,
		Origin:  c.origin,
		Expiry:  c.expiry,
	}
	if c.sess == nil {
		r.Expiry = 0
	}
	if c.v5 {
		r.Props = pk.Connect.WillProperties.Copy(false)
		r.Delay = pk.Connect.WillProperties.WillDelayInterval
	}
	if err := s.putWill(id, r, true); err != nil {
		return err
	}
	c.will = r
	return nil
}

// endWill runs in c's teardown, after its publishes were committed: the
// will is deleted after a normal DISCONNECT, kept stored at shutdown, and
// otherwise published now or after its delay.
func (c *conn) endWill() {
	r := c.will
	if r == nil {
		return
	}
	s := c.s
	id := c.cl.ID
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	s.willMu.Lock()
	defer s.willMu.Unlock()
	switch {
	case c.normal.Load():
		if err := s.b.ApplyKV([]engine.KVOp{{NS: willNS, Key: id, Delete: true}}, true); err != nil && !errors.Is(err, engine.ErrClosed) {
			c.log.Error().Err(err).Msg("deleting will")
		}
		return
	case closed:
		return // published at the next start
	}
	expiry := c.expiryNow()
	d := willDelay(r.Delay, expiry)
	if d == 0 {
		if err := s.publishWillLocked(id, r); err != nil && !errors.Is(err, engine.ErrClosed) {
			c.log.Error().Err(err).Msg("publishing will")
		}
		return
	}
	pw := &pendingWill{id: id, rec: *r}
	pw.rec.Expiry = expiry
	pw.rec.Due = s.clock.Now().Add(d).UnixNano()
	// Not synced: after a crash the will counts from the restart.
	if err := s.putWill(id, &pw.rec, false); err != nil && !errors.Is(err, engine.ErrClosed) {
		c.log.Error().Err(err).Msg("storing will")
	}
	s.armWillLocked(pw, d)
}

// expiryNow is the session expiry interval c's session ends with (0 for a
// clean session).
func (c *conn) expiryNow() uint32 {
	if c.sess == nil {
		return 0
	}
	c.s.sessMu.Lock()
	defer c.s.sessMu.Unlock()
	return c.sess.rec.Expiry
}

func (s *Server) armWillLocked(pw *pendingWill, d time.Duration) {
	s.wills[pw.id] = pw
	pw.timer = s.clock.AfterFunc(d, func() { s.fireWill(pw) })
}

// fireWill publishes a will whose delay passed, unless its session
// resumed (or the server closed) since.
func (s *Server) fireWill(pw *pendingWill) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	s.willMu.Lock()
	defer s.willMu.Unlock()
	if s.wills[pw.id] != pw {
		return
	}
	delete(s.wills, pw.id)
	if err := s.publishWillLocked(pw.id, &pw.rec); err != nil && !errors.Is(err, engine.ErrClosed) {
		s.log.Error().Err(err).Str("client", pw.id).Msg("publishing will")
	}
}

// publishWillLocked publishes a will through the engine and deletes its
// record in the same batch, then stores it as retained if it asks.
func (s *Server) publishWillLocked(id string, r *willRecord) error {
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: r.QoS, Retain: r.Retain},
		TopicName:   r.Topic,
		Payload:     r.Payload,
		Properties:  r.Props,
	}
	m := pubMessage(&pk, r.V5, r.Origin, time.Now())
	tx := s.b.BeginBatch()
	_ = tx.Publish(m) // a refusal is reported by PublishErr
	tx.DeleteKV(willNS, id)
	if err := tx.Commit(); err != nil {
		return err
	}
	perr := tx.PublishErr(0)
	if perr != nil {
		s.log.Warn().Err(perr).Str("client", id).Str("topic", r.Topic).Msg("will refused by the engine")
		return nil
	}
	if err := s.storeRetained([]pubItem{{m: m, qos: r.QoS}}, []error{nil}); err != nil {
		return fmt.Errorf("storing retained will: %w", err)
	}
	s.log.Debug().Str("client", id).Str("topic", r.Topic).Msg("will published")
	return nil
}

// stopWills stops every will timer (Close); the wills stay stored.
func (s *Server) stopWills() {
	s.willMu.Lock()
	defer s.willMu.Unlock()
	for id, pw := range s.wills {
		pw.timer.Stop()
		delete(s.wills, id)
	}
}
